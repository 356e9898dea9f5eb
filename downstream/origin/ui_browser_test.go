package origin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/content-cache/content-cache/internal/regtest"
)

// The web pages in a real browser: Debian's headless chromium, driven by
// chromedp, against an origin and a content cache the tests start. Every
// test runs with JavaScript turned off (the pages need none), and saves a
// screenshot of each page it visits.

const chromiumPath = "/usr/bin/chromium"

// browser starts a headless chromium with a fresh profile, JavaScript off,
// and returns its tab's context. Without chromium the test is skipped,
// unless CI is set.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v (CI installs Debian's chromium)", chromiumPath, err)
		}
		t.Skipf("%s not found; install Debian's chromium to run the browser tests", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // as root
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancelTimeout)
	noScript := chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	})
	// A page whose script would rename it: with scripts off it keeps its
	// title, so what the tests see is what a browser without JavaScript
	// gets.
	probe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!DOCTYPE html><title>static</title><script>document.title = "scripted"</script>`)
	}))
	t.Cleanup(probe.Close)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), noScript, chromedp.Navigate(probe.URL)); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	if title, err := chromedp.Run(ctx, chromedp.Title()); err != nil || title != "static" {
		t.Fatalf("JavaScript is not off in the browser: title %q, %v", title, err)
	}
	return ctx
}

// artifacts is where the screenshots go: $TEST_ARTIFACTS, else
// conformance/results/ui under the module root.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "conformance", "results", "ui")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(artifacts(t), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

func act(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func html(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatalf("page HTML: %v", err)
	}
	return s
}

// signIn signs in through the form.
func signIn(t *testing.T, ctx context.Context, base, user, pass string) {
	t.Helper()
	act(t, ctx, "sign in as "+user,
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), pass),
		chromedp.Click(chromedp.CSS(`button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/ui/signout"]`)),
	)
}

// TestBrowserUserPicksCache: alice signs in, sees that no cache is set
// for her, picks the cache, and the next crane pull from the origin's
// address gets every blob from the cache.
func TestBrowserUserPicksCache(t *testing.T) {
	ctx := browser(t)
	crane := regtest.Tool(t, "crane", "bin/crane")
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	cache, _ := signingCache(t, og.URL, og.URL+keysPath, "region-asia", nil, clock)
	img := regtest.RandomImage(22, 2, 32<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	register(t, og, "", "region-asia", cache.URL)
	og.Origin.Probe(t.Context())

	act(t, ctx, "open the pages", chromedp.Navigate(og.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#username")))
	screenshot(t, ctx, "signin")
	signIn(t, ctx, og.URL, "alice", "alicepw")
	if got := text(t, ctx, "#current-none"); !strings.Contains(got, "no cache is set for you") {
		t.Fatalf("before: %q", got)
	}
	if got := text(t, ctx, "#pull"); got != "docker pull "+strings.TrimPrefix(og.URL, "http://")+"/REPOSITORY:TAG" {
		t.Errorf("pull line %q", got)
	}
	act(t, ctx, "pick region-asia", chromedp.Click(chromedp.CSS("#cache-region-asia")), chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#current")))
	if got := text(t, ctx, "#current"); got != "region-asia" {
		t.Fatalf("after picking: current cache %q", got)
	}
	if got := text(t, ctx, "main"); !strings.Contains(got, "your own setting") || !strings.Contains(got, "Your setting is saved.") || !strings.Contains(got, "healthy") {
		t.Errorf("the user page does not say why, or the health:\n%s", got)
	}
	screenshot(t, ctx, "user")

	// crane pulls from the origin's address; the blobs come from the cache.
	before := og.Counts.snapshot()
	env := append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
	host := strings.TrimPrefix(og.URL, "http://")
	run := func(args ...string) {
		cmd := exec.CommandContext(t.Context(), crane, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("auth", "login", host, "-u", "alice", "-p", "alicepw")
	run("pull", "--format", "oci", host+"/"+img.Repo+":"+img.Tag, filepath.Join(t.TempDir(), "img"))
	after := og.Counts.snapshot()
	blobs := len(img.Layers) + 1
	if n := og.Origin.metrics.redirected("region-asia"); n < uint64(blobs) {
		t.Errorf("the origin redirected %d blob downloads to region-asia, want at least %d", n, blobs)
	}
	if direct := (after.blobGETs - after.signedGETs) - (before.blobGETs - before.signedGETs); direct != 0 {
		t.Errorf("the origin served %d blobs directly to crane, want 0", direct)
	}
	if signed := after.signedGETs - before.signedGETs; signed != blobs {
		t.Errorf("the cache fetched %d blobs with a signature, want %d", signed, blobs)
	}
}

// TestBrowserAdminManagesCaches: an admin creates a cache, sees it turn
// healthy once probed, assigns two users at once, and deletes it.
func TestBrowserAdminManagesCaches(t *testing.T) {
	ctx := browser(t)
	probed := make(chan struct{}, 16)
	og := startOriginWith(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{
		"caches":        []any{map[any]any{"name": "static-lan", "host": "http://127.0.0.1:9"}},
		"probeinterval": "1h", // rounds come from creations (and the first one)
	}, Options{AfterProbe: func() {
		select {
		case probed <- struct{}{}:
		default:
		}
	}})
	waitProbe := func() {
		select {
		case <-probed:
		case <-ctx.Done():
			t.Fatal("no probe round")
		}
	}
	waitProbe() // the first round, at start
	cache := fakeCache(t)

	signIn(t, ctx, og.URL, "admin", "adminpw")
	act(t, ctx, "create a cache",
		chromedp.Navigate(og.URL+"/ui/admin"),
		chromedp.SendKeys(chromedp.CSS("#name"), "edge"),
		chromedp.SendKeys(chromedp.CSS("#host"), cache.URL),
		chromedp.Click(chromedp.CSS("#create-button")),
		chromedp.WaitVisible(chromedp.CSS("#row-edge")),
	)
	waitProbe() // the round the creation asked for
	act(t, ctx, "reload", chromedp.Navigate(og.URL+"/ui/admin"), chromedp.WaitVisible(chromedp.CSS("#row-edge")))
	row := text(t, ctx, "#row-edge")
	if !strings.Contains(row, "healthy") || strings.Contains(row, "not answering") || !strings.Contains(row, "API") || !strings.Contains(row, cache.URL) {
		t.Fatalf("the new cache's row after a probe: %q", row)
	}
	if row := text(t, ctx, "#row-static-lan"); !strings.Contains(row, "configuration") || !strings.Contains(row, "not answering") {
		t.Errorf("the configured cache's row: %q", row)
	}
	screenshot(t, ctx, "admin")

	act(t, ctx, "assign two users",
		chromedp.SetValue(chromedp.CSS("#assign-cache"), "edge"),
		chromedp.SendKeys(chromedp.CSS("#users"), "alice, bob"),
		chromedp.Click(chromedp.CSS("#assign-button")),
		chromedp.WaitVisible(chromedp.CSS(".done")),
	)
	for _, u := range []string{"alice", "bob"} {
		if r := api(t, og.URL, "admin", "adminpw", http.MethodGet, accountsPrefix+u+"/settings", ""); !strings.Contains(r.Body, `"edge"`) {
			t.Errorf("%s after the bulk assignment: %s", u, r.Body)
		}
	}
	// The page before already shows a .done message: wait for the row to go.
	act(t, ctx, "delete it", chromedp.Click(chromedp.CSS("#delete-edge")), chromedp.WaitNotPresent(chromedp.CSS("#row-edge")))
	if got := text(t, ctx, ".done"); !strings.Contains(got, "deleted") {
		t.Errorf("after deleting: %q", got)
	}
	if strings.Contains(html(t, ctx), `id="row-edge"`) {
		t.Error("the deleted cache is still listed")
	}
	if r := api(t, og.URL, "admin", "adminpw", http.MethodGet, cachesPath+"/edge", ""); r.Status != http.StatusNotFound {
		t.Errorf("the deleted cache at the API: %d", r.Status)
	}
}

// TestBrowserForgeryRefused: a form on another site posting to the admin
// page gets no session (SameSite=Strict) and is refused; bob, signed in
// but not an admin, is refused the admin page and a POST with his own
// valid CSRF token; a POST without the token is refused.
func TestBrowserForgeryRefused(t *testing.T) {
	ctx := browser(t)
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	cache := fakeCache(t)

	// The admin signs in; then visits another site whose form posts to the
	// origin (localhost is another site than 127.0.0.1).
	signIn(t, ctx, og.URL, "admin", "adminpw")
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!DOCTYPE html><title>free stuff</title><form method="post" action="%s/ui/admin/create">
<input type="hidden" name="name" value="evil"><input type="hidden" name="host" value="%s">
<button id="go" type="submit">Win</button></form>`, og.URL, cache.URL)
	}))
	t.Cleanup(evil.Close)
	act(t, ctx, "the forged form", chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)), chromedp.Click(chromedp.CSS("#go")), chromedp.WaitVisible(chromedp.CSS("main")))
	if got := text(t, ctx, "main"); !strings.Contains(got, "not signed in") {
		t.Errorf("the cross-site form's answer: %q", got)
	}
	if r := api(t, og.URL, "admin", "adminpw", http.MethodGet, cachesPath+"/evil", ""); r.Status != http.StatusNotFound {
		t.Fatalf("the forged form created a cache: %d", r.Status)
	}

	// bob, not an admin.
	bobCtx := browser(t)
	signIn(t, bobCtx, og.URL, "bob", "bobpw")
	if strings.Contains(html(t, bobCtx), "/ui/admin") {
		t.Error("bob's page links to the admin page")
	}
	act(t, bobCtx, "bob opens the admin page", chromedp.Navigate(og.URL+"/ui/admin"), chromedp.WaitVisible(chromedp.CSS(".error")))
	if got := text(t, bobCtx, "main"); !strings.Contains(got, `User "bob" is not an admin`) || strings.Contains(html(t, bobCtx), "create-button") {
		t.Errorf("bob on the admin page: %q", got)
	}
	screenshot(t, bobCtx, "refused")
	// bob's own session and CSRF token, in a forged POST.
	act(t, bobCtx, "bob's page", chromedp.Navigate(og.URL+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#save")))
	csrf, err := chromedp.Run(bobCtx, chromedp.Value(chromedp.CSS(`form[action="/ui/settings"] input[name="csrf"]`)))
	if err != nil || csrf == "" {
		t.Fatalf("bob's CSRF token: %q %v", csrf, err)
	}
	cookie := browserCookie(t, bobCtx, og.URL)
	post := func(path, form string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, og.URL+path, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", sessionCookie+"="+cookie)
		resp, err := noRedirects().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := post("/ui/admin/create", "csrf="+csrf+"&name=bobs&host="+cache.URL); s != http.StatusForbidden {
		t.Errorf("bob's POST to create a cache: %d, want 403", s)
	}
	if s := post("/ui/admin/assign", "csrf="+csrf+"&cache=&users=alice"); s != http.StatusForbidden {
		t.Errorf("bob's POST to assign: %d, want 403", s)
	}
	if s := post("/ui/settings", "cache="); s != http.StatusForbidden {
		t.Errorf("a POST without CSRF token: %d, want 403", s)
	}
	if s := post("/ui/settings", "csrf=x"+csrf+"&cache="); s != http.StatusForbidden {
		t.Errorf("a POST with a wrong CSRF token: %d, want 403", s)
	}
	if s := post("/ui/settings", "csrf="+csrf+"&cache="); s != http.StatusSeeOther {
		t.Errorf("bob's own valid POST: %d, want 303 (the refusals above prove something)", s)
	}
	if r := api(t, og.URL, "admin", "adminpw", http.MethodGet, cachesPath+"/bobs", ""); r.Status != http.StatusNotFound {
		t.Fatalf("bob created a cache: %d", r.Status)
	}
}

// browserCookie returns the session cookie the browser holds for base.
func browserCookie(t *testing.T, ctx context.Context, base string) string {
	t.Helper()
	value := ""
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{base + uiPath}})
		if err != nil {
			return err
		}
		for _, c := range res.Cookies {
			if c.Name == sessionCookie {
				value = c.Value
				if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
					t.Errorf("the session cookie is not HttpOnly and SameSite=Strict: %+v", c)
				}
			}
		}
		return nil
	}))
	if err != nil || value == "" {
		t.Fatalf("the browser's session cookie: %q %v", value, err)
	}
	return value
}
