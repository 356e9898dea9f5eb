package origin

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The web pages at /ui/: a user picks their cache, admins manage caches.
// Server-rendered (html/template), usable without JavaScript. A session
// cookie (session.go) identifies the user; Authorization headers are
// ignored here, since a browser sends Basic credentials to any page of a
// site that once asked for them.

//go:embed ui/*.html ui/style.css
var uiFiles embed.FS

// ui is the pages' state, set by Wrap (it needs the registry's
// configuration: http.secret and the auth section).
type ui struct {
	auth     authConfig
	sessions *sessions
	pages    *template.Template
}

func (o *Origin) setUI(secret string, a authConfig) {
	o.ui = &ui{
		auth:     a,
		sessions: newSessions(secret, o.now),
		pages:    template.Must(template.New("").Funcs(template.FuncMap{"since": o.since}).ParseFS(uiFiles, "ui/*.html")),
	}
}

// since says how long ago t was, for people.
func (o *Origin) since(t *time.Time) string {
	if t == nil {
		return "never"
	}
	d := o.now().Sub(*t).Round(time.Second)
	if d < time.Second {
		return "just now"
	}
	return d.String() + " ago"
}

// pageData is what every page template gets.
type pageData struct {
	Title   string
	User    string
	Admin   bool
	CSRF    string
	Done    string // what the last form did
	Error   string // why the last form was refused
	APIDoc  string
	Caches  []cacheStatus
	Current string // the user's page: their cache, "" for none
	Why     string
	Note    string
	Pull    string // the docker pull line
}

func (o *Origin) serveUI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if r.URL.Path == "/ui" {
		http.Redirect(w, r, uiPath, http.StatusMovedPermanently)
		return
	}
	if r.URL.Path == uiPath+"style.css" {
		o.serveStyle(w, r)
		return
	}
	// Every other page holds user data or a form: never kept by a cache.
	h.Set("Cache-Control", "no-store")
	if o.ui == nil {
		http.Error(w, "the web pages are not set up (build the handler with Wrap)", http.StatusNotFound)
		return
	}
	page := strings.TrimPrefix(r.URL.Path, uiPath)
	switch page {
	case "signin":
		o.serveSignin(w, r)
		return
	case "", "signout", "settings", "admin", "admin/create", "admin/delete", "admin/assign":
	default:
		o.render(w, http.StatusNotFound, "error", pageData{Title: "Not found", Error: "There is no page " + r.URL.Path + "."})
		return
	}
	get := page == "" || page == "admin"
	if !methodOK(w, r, get) {
		return
	}
	sess, ok := o.ui.sessions.current(r)
	if !ok {
		if r.Method == http.MethodGet {
			http.Redirect(w, r, uiPath+"signin", http.StatusSeeOther)
			return
		}
		o.render(w, http.StatusForbidden, "error", pageData{Title: "Signed out", Error: "You are not signed in, or your session ended. Sign in again."})
		return
	}
	id := o.identityOf(sess.User)
	d := pageData{User: id.user, Admin: id.admin, CSRF: o.ui.sessions.csrf(sess), APIDoc: openAPIPath, Done: r.URL.Query().Get("done")}
	if r.Method == http.MethodPost {
		if err := o.checkForm(r, sess); err != nil {
			d.Title, d.Error = "Refused", err.Error()
			o.render(w, http.StatusForbidden, "error", d)
			return
		}
	}
	if strings.HasPrefix(page, "admin") && !id.admin {
		d.Title, d.Error = "Not allowed", fmt.Sprintf("User %q is not an admin of the content caches.", id.user)
		o.render(w, http.StatusForbidden, "error", d)
		return
	}
	ctx := r.Context()
	switch page {
	case "":
		o.userPage(ctx, w, r, d, http.StatusOK)
	case "signout":
		o.ui.sessions.end(w, r)
		http.Redirect(w, r, uiPath+"signin?done=signed-out", http.StatusSeeOther)
	case "settings":
		if err := o.setUserCache(ctx, id.user, r.PostFormValue("cache")); err != nil {
			d.Error = err.Error()
			o.userPage(ctx, w, r, d, err.status)
			return
		}
		http.Redirect(w, r, uiPath+"?done=saved", http.StatusSeeOther)
	case "admin":
		o.adminPage(w, d, http.StatusOK)
	case "admin/create":
		if _, err := o.createCache(ctx, strings.TrimSpace(r.PostFormValue("name")), strings.TrimSpace(r.PostFormValue("host"))); err != nil {
			d.Error = err.Error()
			o.adminPage(w, d, err.status)
			return
		}
		http.Redirect(w, r, uiPath+"admin?done=created", http.StatusSeeOther)
	case "admin/delete":
		if err := o.removeCache(ctx, r.PostFormValue("name")); err != nil {
			d.Error = err.Error()
			o.adminPage(w, d, err.status)
			return
		}
		http.Redirect(w, r, uiPath+"admin?done=deleted", http.StatusSeeOther)
	case "admin/assign":
		users := strings.FieldsFunc(r.PostFormValue("users"), func(c rune) bool { return c == ',' || c == '\n' || c == '\r' || c == ' ' || c == '\t' })
		if len(users) == 0 {
			d.Error = "No user named: list the users, one a line or separated by commas."
			o.adminPage(w, d, http.StatusBadRequest)
			return
		}
		for _, u := range users {
			if err := o.setUserCache(ctx, u, r.PostFormValue("cache")); err != nil {
				d.Error = fmt.Sprintf("%s (user %q; the users before it were set)", err.Error(), u)
				o.adminPage(w, d, err.status)
				return
			}
		}
		http.Redirect(w, r, uiPath+"admin?done=assigned", http.StatusSeeOther)
	}
}

// methodOK allows GET (and HEAD) on pages, POST on forms.
func methodOK(w http.ResponseWriter, r *http.Request, page bool) bool {
	allowed := http.MethodPost
	if page {
		allowed = "GET, HEAD"
	}
	if (page && (r.Method == http.MethodGet || r.Method == http.MethodHead)) || (!page && r.Method == http.MethodPost) {
		return true
	}
	w.Header().Set("Allow", allowed)
	http.Error(w, "method not allowed; expected "+allowed, http.StatusMethodNotAllowed)
	return false
}

// checkForm refuses a POST without the session's CSRF token, or sent by
// another site (Origin); SameSite=Strict already keeps the cookie from
// cross-site requests: this holds without it.
func (o *Origin) checkForm(r *http.Request, sess session) error {
	r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		u, err := url.Parse(origin)
		if err != nil || u.Host != r.Host {
			return fmt.Errorf("the form was sent from another site (%s)", origin)
		}
	}
	return o.ui.sessions.checkCSRF(r, sess)
}

func (o *Origin) serveSignin(w http.ResponseWriter, r *http.Request) {
	if !methodOK(w, r, r.Method != http.MethodPost) {
		return
	}
	d := pageData{Title: "Sign in", APIDoc: openAPIPath, Done: r.URL.Query().Get("done")}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(nil, r.Body, maxBody)
		if err := o.ui.sessions.checkSignin(r); err != nil {
			d.Error = err.Error()
			d.CSRF = o.ui.sessions.signinToken(w, r)
			o.render(w, http.StatusForbidden, "signin", d)
			return
		}
		id, err := o.checkPassword(r.Context(), o.ui.auth, r.PostFormValue("username"), r.PostFormValue("password"))
		if err != nil {
			d.Error = err.Error()
			d.User = r.PostFormValue("username")
			d.CSRF = o.ui.sessions.signinToken(w, r)
			o.render(w, http.StatusUnauthorized, "signin", d)
			return
		}
		o.ui.sessions.issue(w, r, id.user)
		next := uiPath
		if id.admin {
			next = uiPath + "admin"
		}
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	d.CSRF = o.ui.sessions.signinToken(w, r)
	o.render(w, http.StatusOK, "signin", d)
}

// userPage: the user's cache and why, the caches, a form to pick one.
func (o *Origin) userPage(ctx context.Context, w http.ResponseWriter, r *http.Request, d pageData, status int) {
	d.Title = "Your content cache"
	d.Caches = o.caches()
	name, why, err := o.explain(ctx, d.User, r)
	if err != nil {
		d.Error = "Your setting cannot be read now: " + err.Error()
	}
	d.Current, d.Why = name, why
	if name != "" {
		if _, known := o.knownCache(name); !known {
			d.Note = "That cache does not exist (any more): the origin serves your downloads itself."
		} else if !o.isHealthy(name) {
			d.Note = "That cache did not answer its last health check: the origin serves your downloads itself until it does."
		}
	}
	d.Pull = "docker pull " + r.Host + "/REPOSITORY:TAG"
	o.render(w, status, "user", d)
}

// explain returns the user's cache and why it is theirs.
func (o *Origin) explain(ctx context.Context, user string, r *http.Request) (string, string, error) {
	own, err := o.store.setting(ctx, user)
	if err != nil {
		return "", "", err
	}
	if own != "" {
		return own, "your own setting (below)", nil
	}
	if c := o.cfg.Users[user]; c != "" {
		return c, "the origin's configuration assigns you to it (option users)", nil
	}
	if n, addr, ok := o.networkRule(r); ok {
		return n.Cache, fmt.Sprintf("your address %s is in %s (option networks); pulls from another address may go elsewhere", addr, n.Prefix), nil
	}
	return "", "no cache is set for you: the origin serves your downloads itself", nil
}

func (o *Origin) adminPage(w http.ResponseWriter, d pageData, status int) {
	d.Title = "Content caches"
	d.Caches = o.caches()
	o.render(w, status, "admin", d)
}

func (o *Origin) render(w http.ResponseWriter, status int, page string, d pageData) {
	var buf bytes.Buffer
	if err := o.ui.pages.ExecuteTemplate(&buf, page, d); err != nil {
		o.log.WithError(err).Error("rendering a page")
		http.Error(w, "cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (o *Origin) serveStyle(w http.ResponseWriter, r *http.Request) {
	if !methodOK(w, r, true) {
		return
	}
	css, err := uiFiles.ReadFile("ui/style.css")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(css)
}
