//! The one test harness of Vishwa: every test that starts a scheduler and workers, or looks
//! at what they left in Docker, uses these pieces.
//!
//! - [`names`], [`net`], [`poll`]: unique names, free ports, waiting with a deadline;
//! - [`process`]: child processes run to their end or stopped with SIGTERM then SIGKILL;
//! - [`inproc`]: a scheduler and workers inside the test process, on a real socket;
//! - [`cluster`]: a scheduler with one Docker-and-process worker and a client, in process;
//! - [`procs`]: a scheduler and workers as `vishwa` child processes, killed and restarted;
//! - [`postgres`]: a real PostgreSQL server (initdb + postgres in a temp dir, free port);
//! - [`http`]: GET on the scheduler's HTTP port (plain or TLS, with a token);
//! - [`browser`]: headless Chromium over WebDriver, for the console;
//! - [`auth`]: bearer tokens; [`docker`], [`images`], [`containers`], [`blocking`]: the
//!   local engine, the locally built test images, containers found (and removed) by label.

pub mod auth;
pub mod blocking;
pub mod browser;
pub mod cluster;
pub mod containers;
pub mod docker;
pub mod http;
pub mod images;
pub mod inproc;
pub mod names;
pub mod net;
pub mod poll;
pub mod postgres;
pub mod process;
pub mod procs;
pub mod s3;
