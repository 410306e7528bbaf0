// Package supabase holds the supabase CLI project (config.toml, migrations,
// seed.sql) and embeds its migrations so that `runops migrate` applies exactly
// the files the CLI applies. It must not contain anything but that.
package supabase

import "embed"

// Migrations holds migrations/<version>_<name>.sql, in version order when sorted by name.
//
//go:embed migrations/*.sql
var Migrations embed.FS
