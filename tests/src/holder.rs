//! Helper processes (`np-holder`) that hold sockets in a namespace for as long as a test needs.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use crate::Netns;

/// A helper process inside a namespace (see `np-holder`), killed on drop.
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `bin args…` inside `ns` and waits for its "ready" line.
    pub fn start(ns: &Netns, bin: &str, args: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, bin])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "holder {args:?} did not start");
        Self { child }
    }

    /// `ip netns exec` execs the program: this is the holder's own pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
