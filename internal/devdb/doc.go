// Package pglocal gives dev commands and tests a PostgreSQL server URL
// without asking the developer to set one up by hand.
//
// It owns the decision of which server to use and, when it has to, the
// lifecycle of a private throwaway cluster:
//
//  1. an explicit URL (TUNNELPLANE_DATABASE_URL or a flag) is used as is;
//  2. otherwise a local server at 127.0.0.1:5432 (user postgres, trust auth)
//     is used if it answers;
//  3. otherwise, if PostgreSQL server binaries are installed, a private
//     cluster is initialised and started under a project-local,
//     git-ignored directory (for example .tunnelplane/postgres) and reused
//     by later runs and by concurrent test processes;
//  4. otherwise Resolve fails with ErrNoPostgres and a message that says
//     exactly how to proceed.
//
// In every case the requested database is created when it is missing.
// The private cluster directory layout (data/, port, lock, postgres.log,
// run/ or socketdir) is an implementation detail of this package; callers
// only pass the directory to Resolve and StopPrivate.
//
// This package is for development and tests only: private clusters use
// trust authentication and listen on 127.0.0.1 only.
package devdb
