package config

// Diff is what changed between two configs, as Compare reports it.
type Diff struct {
	LogChanged    bool // log level or format
	ListenChanged bool // public listen address
	AdminChanged  bool // admin listen address
	// AccessChanged is set when admin.token, admin.token_file (or what it
	// holds) or admin.hosts changed; it applies without a new listener.
	AccessChanged bool
	ProxyChanged  bool // any proxy or shutdown setting
	Added         []string
	Removed       []string
	Changed       []AppDiff // only apps that exist in both and differ
}

// AppDiff is what changed in one app present in both configs.
type AppDiff struct {
	Name string
	// Restart is set when command, dir, env, user or group changed: the app
	// needs a rolling restart.
	Restart bool
	// Scale is set when instances changed, from From to To.
	Scale    bool
	From, To int
	// Settings is set when anything else changed (health, routing, balancing,
	// timeouts...), which applies in place.
	Settings bool
	// Fields are the dotted keys that changed ("app.web.env", "app.web.health.interval").
	Fields []string
}
