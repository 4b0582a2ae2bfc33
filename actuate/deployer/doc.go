// Package deployer is the side of scalpel that runs inside a service: it holds the versions of the
// service's code blocks and endpoints, switches the active one when scalpel says so, and answers.
//
// A service registers its switchable pieces — Block[T] for a region of code with several
// implementations, Handler for the versions of an HTTP endpoint, OnAppRollback for what only a
// redeploy can undo — and starts a Deployer. The Deployer takes the desired state from the
// scalpel_active bucket at start-up, then follows both that bucket and rollback.cmd.<svc>, applies
// each command once (by command id), and acks it on rollback.ack.<svc> with the version now active.
//
// Switching is an atomic pointer swap: the call path (Block.Get, Handler.ServeHTTP) takes no lock
// and never waits for NATS. A service that loses NATS keeps serving whatever is active.
//
// This package is embedded by other people's services, so it imports only schemas, nats.go (and its
// jetstream package) and the standard library.
package deployer
