//! Which device nodes a container may create, read and write: the rules (Docker's default
//! allowlist, plus what a spec adds, such as a block volume's loop device), and how they
//! reach the kernel.
//!
//! On cgroup v1 the rules are written to the `devices` controller. Cgroup v2 has no such
//! controller: the kernel asks a BPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`,
//! attached to the container's cgroup, about every device access. [`compile`] turns the
//! rules into that program and [`attach`] loads it with `bpf(2)`; a container on v2
//! never starts without it.
//!
//! The rules are evaluated as the v1 controller and runc do: in order, the last rule that
//! matches decides, and an access no rule matches is denied. A rule matches when the
//! device's type, major and minor fit it (`None` is any) and every access asked for is
//! among the rule's.
//!
//! The program, for rules `r1..rn`, checks `rn` first and returns at the first match:
//!
//! ```text
//! r2 = ctx.access_type & 0xffff   (1 block, 2 char)
//! r3 = ctx.access_type >> 16      (1 mknod, 2 read, 4 write)
//! r4 = ctx.major; r5 = ctx.minor
//! rule: if r2 != type goto next; if r4 != major goto next; if r5 != minor goto next;
//!       r1 = r3 & ~access; if r1 != 0 goto next; return allow
//! ...
//! return 0
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// A device's type, as the rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Char,
    Block,
}

/// `mknod`.
pub const MKNOD: u8 = 1;
/// `open` for reading.
pub const READ: u8 = 2;
/// `open` for writing.
pub const WRITE: u8 = 4;
/// Every access.
pub const ALL: u8 = MKNOD | READ | WRITE;

/// One device rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// `None`: devices of both types.
    pub kind: Option<Kind>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`MKNOD`], [`READ`], [`WRITE`] or'ed.
    pub access: u8,
}

const fn allow(kind: Kind, major: Option<u32>, minor: Option<u32>, access: u8) -> Rule {
    Rule {
        allow: true,
        kind: Some(kind),
        major,
        minor,
        access,
    }
}

/// Docker's defaults: nothing, then mknod of any node (opening it is another matter),
/// null, zero, full, random, urandom, tty, console, ptmx, pseudo-terminals and tun.
pub const DEFAULT: [Rule; 13] = [
    Rule {
        allow: false,
        kind: None,
        major: None,
        minor: None,
        access: ALL,
    },
    allow(Kind::Char, None, None, MKNOD),
    allow(Kind::Block, None, None, MKNOD),
    allow(Kind::Char, Some(1), Some(3), ALL),
    allow(Kind::Char, Some(1), Some(5), ALL),
    allow(Kind::Char, Some(1), Some(7), ALL),
    allow(Kind::Char, Some(1), Some(8), ALL),
    allow(Kind::Char, Some(1), Some(9), ALL),
    allow(Kind::Char, Some(5), Some(0), ALL),
    allow(Kind::Char, Some(5), Some(1), ALL),
    allow(Kind::Char, Some(5), Some(2), ALL),
    allow(Kind::Char, Some(136), None, ALL),
    allow(Kind::Char, Some(10), Some(200), ALL),
];

/// Parses an access string of the spec (`"rwm"` and any part of it).
fn access_of(s: &str) -> Result<u8, String> {
    s.chars().try_fold(0, |acc, c| match c {
        'r' => Ok(acc | READ),
        'w' => Ok(acc | WRITE),
        'm' => Ok(acc | MKNOD),
        _ => Err(format!("device access {s:?}: only r, w and m are allowed")),
    })
}

impl Rule {
    /// A rule of the spec's `linux.resources.devices`.
    pub fn from_spec(d: &LinuxDeviceCgroup) -> Result<Rule, String> {
        let kind = match d.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::B) => Some(Kind::Block),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(Kind::Char),
            Some(other) => return Err(format!("device type {other:?} has no cgroup rule")),
        };
        let num = |n: Option<i64>, what: &str| -> Result<Option<u32>, String> {
            match n {
                None | Some(-1) => Ok(None),
                Some(n) => u32::try_from(n)
                    .map(Some)
                    .map_err(|_| format!("device {what} number {n} is out of range")),
            }
        };
        Ok(Rule {
            allow: d.allow(),
            kind,
            major: num(d.major(), "major")?,
            minor: num(d.minor(), "minor")?,
            access: access_of(d.access().as_deref().unwrap_or("rwm"))?,
        })
    }

    /// A rule as Docker's `--device-cgroup-rule` and cgroup v1's `devices.allow` write
    /// it: `TYPE MAJOR:MINOR ACCESS` (`c 7:128 rwm`, `b 8:* r`, `a *:* rwm`), an allow
    /// rule.
    pub fn parse_allow(s: &str) -> Result<Rule, String> {
        let bad = || {
            format!(
                "invalid device cgroup rule {s:?}: use TYPE MAJOR:MINOR ACCESS, e.g. \"c 7:128 rwm\" (type a, b or c; * for any number; access of r, w and m)"
            )
        };
        let parts: Vec<&str> = s.split_whitespace().collect();
        let (kind, nums, access) = match parts[..] {
            ["a"] => {
                return Ok(Rule {
                    allow: true,
                    kind: None,
                    major: None,
                    minor: None,
                    access: ALL,
                })
            }
            [k, n] => (k, n, "rwm"),
            [k, n, a] => (k, n, a),
            _ => return Err(bad()),
        };
        let kind = match kind {
            "a" => None,
            "b" => Some(Kind::Block),
            "c" => Some(Kind::Char),
            _ => return Err(bad()),
        };
        let (major, minor) = nums.split_once(':').ok_or_else(bad)?;
        let num = |n: &str| -> Result<Option<u32>, String> {
            if n == "*" {
                Ok(None)
            } else {
                n.parse().map(Some).map_err(|_| bad())
            }
        };
        let access = access_of(access).map_err(|_| bad())?;
        if access == 0 {
            return Err(bad());
        }
        Ok(Rule {
            allow: true,
            kind,
            major: num(major)?,
            minor: num(minor)?,
            access,
        })
    }

    /// The rule as the spec writes it (`linux.resources.devices[]`).
    pub fn to_spec_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"allow": self.allow, "access": self.access_string()});
        if let Some(k) = self.kind {
            v["type"] = serde_json::json!(if k == Kind::Char { "c" } else { "b" });
        }
        if let Some(m) = self.major {
            v["major"] = serde_json::json!(m);
        }
        if let Some(m) = self.minor {
            v["minor"] = serde_json::json!(m);
        }
        v
    }

    fn access_string(&self) -> String {
        [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| self.access & bit != 0)
            .map(|(_, c)| *c)
            .collect()
    }

    /// The line a v1 `devices.allow` or `devices.deny` file takes (`c 1:3 rwm`).
    pub fn to_v1(&self) -> String {
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        let kind = match self.kind {
            None => return "a".into(),
            Some(Kind::Char) => 'c',
            Some(Kind::Block) => 'b',
        };
        format!(
            "{kind} {}:{} {}",
            num(self.major),
            num(self.minor),
            self.access_string()
        )
    }

    /// Whether the rule speaks for an access of `access` to device `kind major:minor`.
    pub fn matches(&self, kind: Kind, major: u32, minor: u32, access: u8) -> bool {
        self.kind.is_none_or(|k| k == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && access & !self.access == 0
    }
}

/// What `rules` decide for one access: the last matching rule's word, or no.
pub fn decide(rules: &[Rule], kind: Kind, major: u32, minor: u32, access: u8) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.matches(kind, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// The rules a spec's `linux.resources.devices` gives; the defaults when it gives none.
pub fn rules_of(list: Option<&Vec<LinuxDeviceCgroup>>) -> Result<Vec<Rule>, String> {
    match list {
        Some(l) if !l.is_empty() => l.iter().map(Rule::from_spec).collect(),
        _ => Ok(DEFAULT.to_vec()),
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// Destination register in the low nibble, source in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes used (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ALU64_AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const ALU64_RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The device program for `rules` (see the module's doc).
pub fn compile(rules: &[Rule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_MOV_X, 3, 2, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each test jumps past the rest of its block; the offset is filled in below.
        let mut block: Vec<(Insn, bool)> = Vec::new();
        if let Some(k) = r.kind {
            let t = if k == Kind::Block { 1 } else { 2 };
            block.push((insn(JMP_JNE_K, 2, 0, 0, t), true));
        }
        if let Some(m) = r.major {
            block.push((insn(JMP_JNE_K, 4, 0, 0, m as i32), true));
        }
        if let Some(m) = r.minor {
            block.push((insn(JMP_JNE_K, 5, 0, 0, m as i32), true));
        }
        if r.access & ALL != ALL {
            block.push((insn(ALU64_MOV_X, 1, 3, 0, 0), false));
            block.push((
                insn(ALU64_AND_K, 1, 0, 0, i32::from(!r.access & ALL)),
                false,
            ));
            block.push((insn(JMP_JNE_K, 1, 0, 0, 0), true));
        }
        block.push((insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)), false));
        block.push((insn(JMP_EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        let unconditional = len == 2;
        for (i, (mut ins, jumps)) in block.into_iter().enumerate() {
            if jumps {
                ins.off = (len - i - 1) as i16;
            }
            prog.push(ins);
        }
        // A rule that matches every access decides them all: what would follow it is
        // unreachable, which the verifier refuses.
        if unconditional {
            return prog;
        }
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel takes a shorter attr
/// as if the rest were zeros.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// The head of `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` of the
    // size passed; the kernel reads (and for a log, writes) only within it and the
    // buffers it points to, which outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the program for `rules` into the kernel.
pub fn load(rules: &[Rule]) -> io::Result<OwnedFd> {
    let prog = compile(rules);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 0];
    let attempt = |log: &mut Vec<u8>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let fd = match attempt(&mut log) {
        Ok(fd) => fd,
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::EACCES) =>
        {
            // Ask again with the verifier's log, to say why.
            log = vec![0u8; 1 << 16];
            let _ = attempt(&mut log);
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            return Err(io::Error::new(
                e.kind(),
                format!("the kernel refused the device program ({e}): {text}"),
            ));
        }
        Err(e) => return Err(e),
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `cgroup`.
/// The cgroup keeps it; it goes when the cgroup is removed.
pub fn attach(cgroup: &std::path::Path, rules: &[Rule]) -> io::Result<()> {
    let prog = load(rules)?;
    let dir = std::fs::File::open(cgroup)?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` over a device access as the kernel would: an interpreter of the few
    /// instructions [`compile`] emits.
    fn run(prog: &[Insn], kind: Kind, major: u32, minor: u32, access: u8) -> u64 {
        let t: u32 = if kind == Kind::Block { 1 } else { 2 };
        let ctx = [(u32::from(access) << 16) | t, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0],
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        panic!("the program does not end");
    }

    fn both_agree(rules: &[Rule]) {
        let prog = compile(rules);
        for kind in [Kind::Char, Kind::Block] {
            for (major, minor) in [
                (1, 3),
                (1, 4),
                (5, 1),
                (136, 7),
                (10, 200),
                (8, 0),
                (7, 2),
                (253, 0),
            ] {
                for access in 1..=ALL {
                    assert_eq!(
                        run(&prog, kind, major, minor, access) == 1,
                        decide(rules, kind, major, minor, access),
                        "{kind:?} {major}:{minor} access {access}"
                    );
                }
            }
        }
    }

    #[test]
    fn defaults_are_docker_s() {
        let d = &DEFAULT;
        assert!(decide(d, Kind::Char, 1, 3, READ | WRITE), "/dev/null");
        assert!(decide(d, Kind::Char, 136, 4, READ | WRITE), "a pty");
        assert!(decide(d, Kind::Block, 8, 0, MKNOD), "mknod of a disk");
        assert!(!decide(d, Kind::Block, 8, 0, READ), "reading a disk");
        assert!(
            !decide(d, Kind::Block, 7, 0, WRITE),
            "writing a loop device"
        );
        assert!(!decide(d, Kind::Char, 1, 1, READ), "/dev/mem");
        assert!(!decide(d, Kind::Char, 1, 3, READ | MKNOD) || decide(d, Kind::Char, 1, 3, ALL));
    }

    #[test]
    fn program_decides_as_the_rules() {
        both_agree(&DEFAULT);
        let mut with_volume = DEFAULT.to_vec();
        with_volume.push(allow(Kind::Block, Some(7), Some(2), ALL));
        both_agree(&with_volume);
        let prog = compile(&with_volume);
        assert_eq!(run(&prog, Kind::Block, 7, 2, READ | WRITE), 1);
        assert_eq!(run(&prog, Kind::Block, 7, 3, READ), 0);
        // A later deny takes back what an earlier allow gave.
        let mut denied = with_volume.clone();
        denied.push(Rule {
            allow: false,
            kind: Some(Kind::Char),
            major: Some(1),
            minor: None,
            access: WRITE,
        });
        both_agree(&denied);
        assert_eq!(run(&compile(&denied), Kind::Char, 1, 3, WRITE), 0);
        assert_eq!(run(&compile(&denied), Kind::Char, 1, 3, READ), 1);
        // No rules: nothing.
        both_agree(&[]);
    }

    /// The verifier refuses a program with an instruction no path reaches.
    #[test]
    fn every_instruction_is_reachable() {
        let mut denied_first = vec![DEFAULT[0]];
        denied_first.extend_from_slice(&DEFAULT[3..5]);
        let mut allow_all_last = DEFAULT.to_vec();
        allow_all_last.push(Rule {
            allow: true,
            kind: None,
            major: None,
            minor: None,
            access: ALL,
        });
        for rules in [&DEFAULT[..], &denied_first[..], &allow_all_last[..], &[]] {
            let prog = compile(rules);
            let mut reached = vec![false; prog.len()];
            let mut todo = vec![0usize];
            while let Some(pc) = todo.pop() {
                if pc >= prog.len() || std::mem::replace(&mut reached[pc], true) {
                    continue;
                }
                match prog[pc].code {
                    JMP_EXIT => {}
                    JMP_JNE_K => todo.extend([pc + 1, pc + 1 + prog[pc].off as usize]),
                    _ => todo.push(pc + 1),
                }
            }
            assert!(reached.iter().all(|r| *r), "{rules:?}: {reached:?}");
            assert_eq!(prog.last().unwrap().code, JMP_EXIT);
        }
    }

    #[test]
    fn spec_round_trip() {
        for r in DEFAULT {
            let d: LinuxDeviceCgroup = serde_json::from_value(r.to_spec_json()).unwrap();
            assert_eq!(Rule::from_spec(&d).unwrap(), r);
        }
        assert_eq!(DEFAULT[0].to_v1(), "a");
        assert_eq!(DEFAULT[1].to_v1(), "c *:* m");
        assert_eq!(DEFAULT[11].to_v1(), "c 136:* rwm");
        let bad: LinuxDeviceCgroup = serde_json::from_value(
            serde_json::json!({"allow": true, "type": "c", "access": "rwx"}),
        )
        .unwrap();
        assert!(Rule::from_spec(&bad)
            .unwrap_err()
            .contains("only r, w and m"));
    }
}
