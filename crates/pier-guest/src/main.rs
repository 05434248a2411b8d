//! `pier-guest`: the init (PID 1) of a Pier VM, the `/init` of its initramfs.
//!
//! It mounts its own /proc, /sys and /dev, loads the kernel modules the initramfs
//! carries (`/lib/modules/*.ko`, in `modules.order`), opens the virtio-serial port
//! named [`pier_guest::PORT_NAME`] and says Ready; then it serves the host's frames
//! (see [`agent`]) until the instance's main process exits, and powers the VM off.
//!
//! PID 1 must never exit (the kernel panics): every fatal error, and any panic, is
//! written to the console (the host keeps it as the VM's console log) and the VM is
//! powered off instead.

mod agent;
mod boot;
mod net;
mod port;
mod setup;
mod spawn;
mod sys;

use std::path::Path;
use std::time::Duration;

/// How long the agent waits for its port to appear after the modules loaded.
const PORT_WAIT: Duration = Duration::from_secs(5);

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "pier-guest is the init of a Pier VM and runs only as PID 1 (the /init of the \
             VM's initramfs); it powers the machine off when done, so it will not run here"
        );
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        sys::console(&format!("panic: {info}"));
        // A forked child that panicked must not power the VM off.
        if std::process::id() == 1 {
            sys::power_off();
        }
        // SAFETY: leaving at once, as a failed child does.
        unsafe { libc::_exit(125) };
    }));

    if let Err(e) = boot::mount_basics() {
        fatal(&e.to_string());
    }
    for (name, e) in boot::load_modules(Path::new(boot::MODULES_DIR)) {
        sys::console(&format!("could not load the module {name}: {e}"));
    }
    let port = match boot::open_port(pier_guest::PORT_NAME, PORT_WAIT) {
        Ok(f) => port::Port::new(f),
        Err(e) => fatal(&e.to_string()),
    };
    match agent::Agent::new(port) {
        Ok(a) => a.serve(),
        Err(e) => fatal(&e.to_string()),
    }
}

fn fatal(msg: &str) -> ! {
    sys::console(&format!("fatal: {msg}"));
    sys::power_off()
}
