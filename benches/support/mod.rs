//! What the whole-process benches share: a Python helper process that prints `ready` once it is
//! set up, and is killed when dropped. (A folder, so Cargo does not take it for a bench.)

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

/// A helper process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `script` under python3 as `argv0` with `args`, once it has printed `ready`.
pub fn spawn(argv0: &str, script: &str, args: &[String]) -> Proc {
    let mut child = Command::new("/usr/bin/python3")
        .arg0(argv0)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    Proc(child)
}
