package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/store"
)

// Redis is the replicas' shared state in one Redis: it makes the Redis
// implementations of Leases, InUse and PullIndex, and watches the
// connection. While Redis fails, Up reports false: callers fall back to
// what one node can do alone (its own coalescing, its own holds), and a
// probe every second brings cluster mode back by itself.
type Redis struct {
	c      *redis.Client
	prefix string
	log    *logrus.Entry
	// OnError, if set, is told of every failed Redis call (a metric).
	onError func()
	// onState, if set, is told when Redis goes down or comes back.
	onState func(up bool)

	up   atomic.Bool
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// RedisOptions are the hooks of a Redis: metrics and the log.
type RedisOptions struct {
	Log     *logrus.Entry
	OnError func()        // a Redis call failed
	OnState func(up bool) // Redis went down (false) or came back (true)
	Dial    time.Duration // connect timeout; default 1s
	IO      time.Duration // read/write timeout of one call; default 1s
	Probe   time.Duration // how often a down Redis is probed; default 1s
}

// NewRedis connects to the Redis of cfg. It does not fail when Redis is
// down: the cache starts, single-node, and joins the cluster once Redis
// answers.
func NewRedis(cfg *config.Redis, o RedisOptions) *Redis {
	if o.Log == nil {
		o.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	opts := &redis.Options{
		Addr: cfg.Addr, Password: cfg.Password, DB: cfg.DB,
		// Fail fast: a request must not wait long on a Redis that is gone,
		// it falls back to what one node can do.
		DialTimeout:  cmpDur(o.Dial, time.Second),
		ReadTimeout:  cmpDur(o.IO, time.Second),
		WriteTimeout: cmpDur(o.IO, time.Second),
		MaxRetries:   1,
		// No client-side identity calls (CLIENT SETINFO) to old servers.
		DisableIdentity: true,
	}
	if cfg.CA != "" {
		pool := x509.NewCertPool()
		for _, c := range cfg.CACerts {
			pool.AddCert(c)
		}
		opts.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	r := &Redis{c: redis.NewClient(opts), prefix: cfg.KeyPrefix, log: o.Log.WithField("redis", cfg.Addr),
		onError: o.OnError, onState: o.OnState}
	r.up.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	probe := cmpDur(o.Probe, time.Second)
	r.wg.Go(func() { r.watch(ctx, probe) })
	return r
}

func cmpDur(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Close stops the probe and closes the connections.
func (r *Redis) Close() error {
	r.stop()
	r.wg.Wait()
	return r.c.Close()
}

// Up reports whether Redis answered lately: false while it fails.
func (r *Redis) Up() bool { return r.up.Load() }

// failed notes a failed call: Redis counts as down until a probe answers.
// A context that ended is the caller's, not Redis's failure.
func (r *Redis) failed(ctx context.Context, err error) {
	if err == nil || errors.Is(err, redis.Nil) || ctx.Err() != nil {
		return
	}
	if r.onError != nil {
		r.onError()
	}
	if r.up.CompareAndSwap(true, false) {
		r.log.WithError(err).Warn("redis unreachable: falling back to single-node fills and holds until it answers again")
		if r.onState != nil {
			r.onState(false)
		}
	}
}

// watch probes Redis while it is down, and brings cluster mode back.
func (r *Redis) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.up.Load() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := r.c.Ping(pctx).Err()
		cancel()
		if err == nil && r.up.CompareAndSwap(false, true) {
			r.log.Info("redis answers again: replicas coordinate through it again")
			if r.onState != nil {
				r.onState(true)
			}
		}
	}
}

// errDown is what calls return while Redis is down, without trying it.
var errDown = errors.New("cluster: redis is down")

func (r *Redis) key(parts ...string) string { return r.prefix + strings.Join(parts, "/") }

// run runs a script, noting a failure.
func (r *Redis) run(ctx context.Context, s *redis.Script, keys []string, args ...any) (any, error) {
	if !r.up.Load() {
		return nil, errDown
	}
	v, err := s.Run(ctx, r.c, keys, args...).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.failed(ctx, err)
	}
	return v, err
}

// --- leases

// The lease protocol (DESIGN.md): one key per lease holding "token owner",
// set only if absent, with an expiry; the token comes from one counter
// shared by every lease, so tokens only grow.
var (
	acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local t = redis.call('INCR', KEYS[2])
local v = t .. ' ' .. ARGV[1]
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return {1, v}`)
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// RedisLeases are Leases in Redis.
type RedisLeases struct{ r *Redis }

var _ Leases = RedisLeases{}

// Leases are r's leases.
func (r *Redis) Leases() RedisLeases { return RedisLeases{r} }

func leaseValue(l Lease) string { return strconv.FormatInt(l.Token, 10) + " " + l.Owner }

func parseLease(key, v string) (Lease, error) {
	tok, owner, ok := strings.Cut(v, " ")
	n, err := strconv.ParseInt(tok, 10, 64)
	if !ok || err != nil {
		return Lease{}, fmt.Errorf("cluster: lease %s holds %q, not \"token owner\"", key, v)
	}
	return Lease{Key: key, Owner: owner, Token: n}, nil
}

// Acquire implements Leases.
func (l RedisLeases) Acquire(ctx context.Context, key, owner string, ttl time.Duration) (Lease, bool, error) {
	v, err := l.r.run(ctx, acquireScript, []string{l.r.key("lease", key), l.r.key("fence")}, owner, ttl.Milliseconds())
	if err != nil {
		return Lease{}, false, err
	}
	res, ok := v.([]any)
	if !ok || len(res) != 2 {
		return Lease{}, false, fmt.Errorf("cluster: acquire answered %v", v)
	}
	got, _ := res[0].(int64)
	val, _ := res[1].(string)
	lease, err := parseLease(key, val)
	return lease, got == 1 && err == nil, err
}

// Renew implements Leases.
func (l RedisLeases) Renew(ctx context.Context, lease Lease, ttl time.Duration) error {
	v, err := l.r.run(ctx, renewScript, []string{l.r.key("lease", lease.Key)}, leaseValue(lease), ttl.Milliseconds())
	if err != nil {
		return err
	}
	if n, _ := v.(int64); n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// Release implements Leases.
func (l RedisLeases) Release(ctx context.Context, lease Lease) error {
	_, err := l.r.run(ctx, releaseScript, []string{l.r.key("lease", lease.Key)}, leaseValue(lease))
	return err
}

// Holder implements Leases.
func (l RedisLeases) Holder(ctx context.Context, key string) (Lease, bool, error) {
	if !l.r.up.Load() {
		return Lease{}, false, errDown
	}
	v, err := l.r.c.Get(ctx, l.r.key("lease", key)).Result()
	if errors.Is(err, redis.Nil) {
		return Lease{}, false, nil
	}
	if err != nil {
		l.r.failed(ctx, err)
		return Lease{}, false, err
	}
	lease, err := parseLease(key, v)
	return lease, err == nil, err
}

// --- in use

// Each replica keeps one member per digest it holds in a sorted set per
// digest, scored by when the hold expires unless refreshed; a removal is a
// key set only while the set has no live member, and a hold is refused
// while that key exists.
var (
	holdScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)
	beginRemovalScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0`)
)

// RedisInUse is the in-use registry of every replica: this process's holds
// in memory (MemoryInUse), and one member per held digest in Redis,
// refreshed while held.
type RedisInUse struct {
	r       *Redis
	local   *MemoryInUse
	replica string        // this replica's name in Redis
	ttl     time.Duration // a hold not refreshed within it is gone
	poll    time.Duration // how often a hold waiting for a removal elsewhere looks again

	mu    sync.Mutex
	seq   uint64
	holds map[digest.Digest]*clusterHold
}

// clusterHold is this replica's hold of a digest in Redis, shared by its
// local holders.
type clusterHold struct {
	n      int
	member string
	ready  chan struct{} // closed once registered (or given up)
	err    error
}

var _ InUse = (*RedisInUse)(nil)

// InUse is r's in-use registry for replica (unique among the replicas: its
// internal URL), whose holds are refreshed every third of ttl until ctx
// ends.
func (r *Redis) InUse(ctx context.Context, replica string, ttl time.Duration) *RedisInUse {
	u := &RedisInUse{r: r, local: NewMemoryInUse(), replica: replica, ttl: ttl, poll: 100 * time.Millisecond,
		holds: make(map[digest.Digest]*clusterHold)}
	r.wg.Go(func() { u.refresh(ctx) })
	return u
}

// Hold implements InUse.
func (u *RedisInUse) Hold(ctx context.Context, dgst digest.Digest) (func(), error) {
	release, err := u.local.Hold(ctx, dgst)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	h := u.holds[dgst]
	first := h == nil
	if first {
		u.seq++
		h = &clusterHold{member: u.replica + "#" + strconv.FormatUint(u.seq, 10), ready: make(chan struct{})}
		u.holds[dgst] = h
	}
	h.n++
	u.mu.Unlock()
	if first {
		h.err = u.register(ctx, dgst, h.member)
		close(h.ready)
	} else {
		select {
		case <-h.ready:
		case <-ctx.Done():
		}
	}
	if h.err != nil || ctx.Err() != nil {
		u.unhold(dgst, h)
		release()
		if h.err != nil {
			return nil, h.err
		}
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { u.unhold(dgst, h); release() }) }, nil
}

// register adds member to dgst's holders in Redis, waiting while another
// replica removes dgst. A Redis failure is no error: the hold is this
// replica's only, as on a single node.
func (u *RedisInUse) register(ctx context.Context, dgst digest.Digest, member string) error {
	for {
		v, err := u.r.run(ctx, holdScript, u.keys(dgst), member, u.ttl.Milliseconds())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil // Redis down: this replica's hold only
		}
		if n, _ := v.(int64); n == 1 {
			return nil
		}
		t := time.NewTimer(u.poll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// unhold drops one local holder of h; the last one removes the member.
func (u *RedisInUse) unhold(dgst digest.Digest, h *clusterHold) {
	u.mu.Lock()
	h.n--
	last := h.n == 0
	if last && u.holds[dgst] == h {
		delete(u.holds, dgst)
	}
	u.mu.Unlock()
	if last && u.r.up.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := u.r.c.ZRem(ctx, u.keys(dgst)[0], h.member).Err(); err != nil {
			u.r.failed(ctx, err) // expires by itself within ttl
		}
	}
}

// HoldAgain implements InUse: the digest is held here already, and in
// Redis through that hold.
func (u *RedisInUse) HoldAgain(dgst digest.Digest) func() {
	release := u.local.HoldAgain(dgst)
	u.mu.Lock()
	h := u.holds[dgst]
	if h != nil {
		h.n++
	}
	u.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			if h != nil {
				u.unhold(dgst, h)
			}
			release()
		})
	}
}

// BeginRemoval implements InUse: nothing holds dgst here nor, in Redis, on
// any replica. While Redis is down nothing is removed: this replica cannot
// tell what the others serve.
func (u *RedisInUse) BeginRemoval(ctx context.Context, dgst digest.Digest) (bool, error) {
	if ok, err := u.local.BeginRemoval(ctx, dgst); !ok {
		return false, err
	}
	v, err := u.r.run(ctx, beginRemovalScript, u.keys(dgst), u.replica, u.ttl.Milliseconds())
	if n, _ := v.(int64); err != nil || n != 1 {
		u.local.EndRemoval(ctx, dgst)
		return false, err
	}
	return true, nil
}

// EndRemoval implements InUse.
func (u *RedisInUse) EndRemoval(ctx context.Context, dgst digest.Digest) {
	if _, err := u.r.run(ctx, releaseScript, u.keys(dgst)[1:], u.replica); err != nil {
		u.r.log.WithError(err).WithField("digest", dgst).Debug("cannot end a removal in redis; it expires by itself")
	}
	u.local.EndRemoval(ctx, dgst)
}

func (u *RedisInUse) keys(dgst digest.Digest) []string {
	return []string{u.r.key("inuse", dgst.String()), u.r.key("removing", dgst.String())}
}

// refresh keeps this replica's holds alive in Redis, every third of ttl.
func (u *RedisInUse) refresh(ctx context.Context) {
	t := time.NewTicker(u.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !u.r.up.Load() {
			continue
		}
		u.mu.Lock()
		held := make(map[digest.Digest]string, len(u.holds))
		for d, h := range u.holds {
			held[d] = h.member
		}
		u.mu.Unlock()
		if len(held) == 0 {
			continue
		}
		_, err := u.r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for d, m := range held {
				holdScript.Run(ctx, p, u.keys(d), m, u.ttl.Milliseconds())
			}
			return nil
		})
		if err != nil && !isScriptRefusal(err) {
			u.r.failed(ctx, err)
		}
	}
}

// isScriptRefusal is a pipeline error that is no failure of Redis: a
// script that answered nil or 0.
func isScriptRefusal(err error) bool { return errors.Is(err, redis.Nil) }

// --- pull index

// Pulls are kept per digest in a hash, field "<kind> <repository>", value
// "<unix milliseconds> <size>" (Lua's numbers are doubles: milliseconds
// stay exact); a set lists the fields changed since the
// last Drain as "<digest> <kind> <repository>".
var recordScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local at, size = tonumber(ARGV[2]), tonumber(ARGV[3])
if cur then
  local sp = string.find(cur, ' ')
  local curAt, curSize = tonumber(string.sub(cur, 1, sp - 1)), tonumber(string.sub(cur, sp + 1))
  if curAt >= at then
    if size > 0 and curSize == 0 then redis.call('HSET', KEYS[1], ARGV[1], string.sub(cur, 1, sp - 1) .. ' ' .. ARGV[3]) end
    return 0
  end
  if size == 0 then size = curSize end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', size))
redis.call('SADD', KEYS[2], ARGV[4])
return 1`)

// RedisPulls are a PullIndex in Redis.
type RedisPulls struct{ r *Redis }

var _ PullIndex = RedisPulls{}

// Pulls are r's pull index.
func (r *Redis) Pulls() RedisPulls { return RedisPulls{r} }

func pullField(ref store.Ref) string { return string(ref.Kind) + " " + ref.Repo }

// Record implements PullIndex.
func (p RedisPulls) Record(ctx context.Context, pl Pull) error {
	f := pullField(pl.Ref)
	_, err := p.r.run(ctx, recordScript, []string{p.r.key("pulls", pl.Digest.String()), p.r.key("pulls-dirty")},
		f, pl.At.UnixMilli(), pl.Size, pl.Digest.String()+" "+f)
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return err
}

func parsePull(dgst digest.Digest, field, v string) (Pull, bool) {
	kind, repo, ok := strings.Cut(field, " ")
	at, size, ok2 := strings.Cut(v, " ")
	ms, err := strconv.ParseInt(at, 10, 64)
	n, err2 := strconv.ParseInt(size, 10, 64)
	if !ok || !ok2 || err != nil || err2 != nil {
		return Pull{}, false
	}
	return Pull{Ref: store.Ref{Digest: dgst, Repo: repo, Kind: store.Kind(kind)}, At: time.UnixMilli(ms), Size: n}, true
}

// Of implements PullIndex.
func (p RedisPulls) Of(ctx context.Context, dgst digest.Digest) ([]Pull, error) {
	if !p.r.up.Load() {
		return nil, errDown
	}
	m, err := p.r.c.HGetAll(ctx, p.r.key("pulls", dgst.String())).Result()
	if err != nil {
		p.r.failed(ctx, err)
		return nil, err
	}
	out := make([]Pull, 0, len(m))
	for f, v := range m {
		if pl, ok := parsePull(dgst, f, v); ok {
			out = append(out, pl)
		}
	}
	return out, nil
}

// drainBatch is how many changed records one Drain takes at most: a
// replica flushes a bounded batch, the rest goes with the next one (or to
// another replica draining at the same time).
const drainBatch = 10000

// Drain implements PullIndex. SPOP hands each changed record to one
// replica only.
func (p RedisPulls) Drain(ctx context.Context) ([]Pull, error) {
	if !p.r.up.Load() {
		return nil, errDown
	}
	members, err := p.r.c.SPopN(ctx, p.r.key("pulls-dirty"), drainBatch).Result()
	if err != nil {
		p.r.failed(ctx, err)
		return nil, err
	}
	type item struct {
		dgst  digest.Digest
		field string
		cmd   *redis.StringCmd
	}
	items := make([]item, 0, len(members))
	_, err = p.r.c.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for _, m := range members {
			d, field, ok := strings.Cut(m, " ")
			if !ok {
				continue
			}
			items = append(items, item{digest.Digest(d), field, pl.HGet(ctx, p.r.key("pulls", d), field)})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		p.r.failed(ctx, err)
		return nil, err
	}
	out := make([]Pull, 0, len(items))
	for _, it := range items {
		v, err := it.cmd.Result()
		if err != nil {
			continue // forgotten meanwhile
		}
		if pl, ok := parsePull(it.dgst, it.field, v); ok {
			out = append(out, pl)
		}
	}
	return out, nil
}

// Forget implements PullIndex.
func (p RedisPulls) Forget(ctx context.Context, dgst digest.Digest) error {
	if !p.r.up.Load() {
		return errDown
	}
	err := p.r.c.Del(ctx, p.r.key("pulls", dgst.String())).Err()
	p.r.failed(ctx, err)
	return err
}

// --- sizes

// The sizes are a hash digest -> bytes and a total beside it, changed
// together by scripts, so that a digest committed by two replicas counts
// once.
var (
	addSizeScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return redis.call('INCRBY', KEYS[2], ARGV[2]) end
return tonumber(redis.call('GET', KEYS[2]) or '0')`)
	removeSizeScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return redis.call('DECRBY', KEYS[2], v)
end
return tonumber(redis.call('GET', KEYS[2]) or '0')`)
	// KEYS[3] is the new hash, written beforehand; absent when empty.
	replaceSizesScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[1])
  redis.call('PERSIST', KEYS[1])
else
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[1])
return tonumber(ARGV[1])`)
)

// RedisSizes are Sizes in Redis.
type RedisSizes struct{ r *Redis }

var _ Sizes = RedisSizes{}

// Sizes are r's stored sizes.
func (r *Redis) Sizes() RedisSizes { return RedisSizes{r} }

func (s RedisSizes) keys() []string { return []string{s.r.key("sizes"), s.r.key("sizes-total")} }

func asTotal(v any, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("cluster: redis answered %v (%T) for a total", v, v)
	}
	return n, nil
}

// Add implements Sizes.
func (s RedisSizes) Add(ctx context.Context, dgst digest.Digest, size int64) (int64, error) {
	return asTotal(s.r.run(ctx, addSizeScript, s.keys(), dgst.String(), size))
}

// Remove implements Sizes.
func (s RedisSizes) Remove(ctx context.Context, dgst digest.Digest) (int64, error) {
	return asTotal(s.r.run(ctx, removeSizeScript, s.keys(), dgst.String()))
}

// replaceBatch is how many digests one HSET of Replace writes.
const replaceBatch = 512

// Replace implements Sizes: the new hash is written under a key of its own
// (expiring, should this replica die meanwhile), then renamed over the old
// one with the total in one script.
func (s RedisSizes) Replace(ctx context.Context, sizes map[digest.Digest]int64) (int64, error) {
	if !s.r.up.Load() {
		return 0, errDown
	}
	tmp := s.r.key("sizes-new", strconv.FormatInt(time.Now().UnixNano(), 36))
	var total int64
	args := make([]any, 0, 2*replaceBatch)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		_, err := s.r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, tmp, args...)
			p.PExpire(ctx, tmp, 10*time.Minute)
			return nil
		})
		args = args[:0]
		if err != nil {
			s.r.failed(ctx, err)
		}
		return err
	}
	for d, n := range sizes {
		total += n
		args = append(args, d.String(), n)
		if len(args) == cap(args) {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return asTotal(s.r.run(ctx, replaceSizesScript, append(s.keys(), tmp), total))
}

// Total implements Sizes.
func (s RedisSizes) Total(ctx context.Context) (int64, error) {
	if !s.r.up.Load() {
		return 0, errDown
	}
	n, err := s.r.c.Get(ctx, s.r.key("sizes-total")).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		s.r.failed(ctx, err)
	}
	return n, err
}
