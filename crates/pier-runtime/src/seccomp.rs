//! Seccomp: Docker's default profile, resolved for a container's capabilities into the
//! OCI spec's `linux.seccomp`, and compiled from the spec into a BPF filter that init
//! installs just before it drops privileges.
//!
//! The profile is Docker's in substance (its syscall lists are facts about what a default
//! container may call); the representation and the compiler are Pier's own. Only x86_64
//! is compiled today: other architectures and the 32-bit and x32 ABIs are refused.
//!
//! The filter is a linear list, two instructions per allowed syscall (about 350 checks
//! at worst); a binary search over syscall numbers would be faster and is left for the
//! benchmark work.

use std::collections::BTreeMap;
use std::io;

use serde::Deserialize;
use serde_json::{json, Value};

/// A profile in Docker's format (`--security-opt seccomp=FILE` reads the same).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub syscalls: Vec<Group>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    #[serde(default)]
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Vec<Arg>,
    #[serde(default)]
    pub includes: Filter,
    #[serde(default)]
    pub excludes: Filter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
}

fn group(names: &str, includes_caps: &[&str]) -> Group {
    Group {
        names: names.split_whitespace().map(String::from).collect(),
        action: "SCMP_ACT_ALLOW".into(),
        includes: Filter {
            caps: includes_caps.iter().map(|c| c.to_string()).collect(),
            arches: vec![],
        },
        ..Default::default()
    }
}

fn with_arg(names: &str, index: u32, op: &str, value: u64, value_two: u64) -> Group {
    Group {
        args: vec![Arg {
            index,
            value,
            value_two,
            op: op.into(),
        }],
        ..group(names, &[])
    }
}

/// Docker's default profile.
pub fn docker_default() -> Profile {
    let mut g = vec![
        group(ALWAYS, &[]),
        with_arg("socket", 0, "SCMP_CMP_NE", 40, 0), // no AF_VSOCK
        group("open_by_handle_at", &["CAP_DAC_READ_SEARCH"]),
        group("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname sethostname setns syslog umount umount2 unshare", &["CAP_SYS_ADMIN"]),
        group("reboot", &["CAP_SYS_BOOT"]),
        group("chroot", &["CAP_SYS_CHROOT"]),
        group("delete_module init_module finit_module", &["CAP_SYS_MODULE"]),
        group("acct", &["CAP_SYS_PACCT"]),
        group("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace", &["CAP_SYS_PTRACE"]),
        group("iopl ioperm", &["CAP_SYS_RAWIO"]),
        group("settimeofday stime clock_settime clock_settime64", &["CAP_SYS_TIME"]),
        group("vhangup", &["CAP_SYS_TTY_CONFIG"]),
        group("get_mempolicy mbind set_mempolicy set_mempolicy_home_node", &["CAP_SYS_NICE"]),
        group("syslog", &["CAP_SYSLOG"]),
        group("bpf", &["CAP_BPF"]),
        group("perf_event_open", &["CAP_PERFMON"]),
    ];
    for p in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        g.push(with_arg("personality", 0, "SCMP_CMP_EQ", p, 0));
    }
    // Without CAP_SYS_ADMIN: clone without namespace flags; clone3 answers ENOSYS so
    // libcs fall back to clone, whose flags can be checked.
    let mut clone = with_arg("clone", 0, "SCMP_CMP_MASKED_EQ", 0x7E02_0000, 0);
    clone.excludes.caps = vec!["CAP_SYS_ADMIN".into()];
    g.push(clone);
    g.push(Group {
        names: vec!["clone3".into()],
        action: "SCMP_ACT_ERRNO".into(),
        errno_ret: Some(38),
        excludes: Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            arches: vec![],
        },
        ..Default::default()
    });
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(1),
        syscalls: g,
    }
}

/// Syscalls every container may make.
const ALWAYS: &str = "accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown clock_adjtime \
clock_getres clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3 epoll_create \
epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat \
exit exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchownat fcntl \
fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv \
futimesat getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername getpgid getpgrp getpid \
getppid getpriority getrandom getresgid getresuid getrlimit get_robust_list getrusage getsid getsockname getsockopt \
get_thread_area gettid gettimeofday getuid getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch \
io_cancel ioctl io_destroy io_getevents io_pgetevents ioprio_get ioprio_set io_setup io_submit io_uring_enter \
io_uring_register io_uring_setup kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr \
link linkat listen listxattr llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create memfd_secret \
mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify mq_open mq_timedreceive \
mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep \
newfstatat open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll \
ppoll prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev pwritev2 read readahead readlink \
readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir \
rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait \
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min \
sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield \
seccomp select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto setfsgid setfsuid setgid setgroups \
setitimer setpgid setpriority setregid setresgid setresuid setreuid setrlimit set_robust_list setsid setsockopt \
set_thread_area set_tid_address setuid setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 \
socketpair splice stat statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create \
timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime times tkill \
truncate umask uname unlink unlinkat utime utimensat utimes vfork vmsplice wait4 waitid write writev \
process_vm_readv process_vm_writev ptrace arch_prctl modify_ldt";

/// Resolves a profile for a container with capabilities `caps` into the OCI spec's
/// `linux.seccomp` object, keeping only what applies to amd64.
pub fn resolve(profile: &Profile, caps: &[String]) -> Value {
    let applies = |g: &Group| {
        let arch_ok = |a: &Vec<String>| a.iter().any(|x| x == "amd64" || x == "x86_64");
        let inc = g.includes.caps.iter().all(|c| caps.contains(c))
            && (g.includes.arches.is_empty() || arch_ok(&g.includes.arches));
        let exc = (!g.excludes.caps.is_empty() && g.excludes.caps.iter().all(|c| caps.contains(c)))
            || arch_ok(&g.excludes.arches);
        inc && !exc
    };
    let syscalls: Vec<Value> = profile
        .syscalls
        .iter()
        .filter(|g| applies(g))
        .map(|g| {
            let mut v = json!({ "names": g.names, "action": g.action });
            if let Some(e) = g.errno_ret {
                v["errnoRet"] = json!(e);
            }
            if !g.args.is_empty() {
                v["args"] = json!(g.args.iter().map(|a| json!({"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op})).collect::<Vec<_>>());
            }
            v
        })
        .collect();
    json!({
        "defaultAction": profile.default_action,
        "defaultErrnoRet": profile.default_errno_ret.unwrap_or(1),
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    })
}

// ---- compiling -----------------------------------------------------------------------

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Why a seccomp profile cannot be compiled: it asks for what Pier's compiler lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    #[error("unsupported seccomp action {0}")]
    Action(String),
    #[error("seccomp rules with several argument conditions are not supported")]
    SeveralConditions,
    #[error("seccomp argument index {0} is out of range")]
    ArgumentIndex(u32),
    #[error("unsupported seccomp comparison {0}")]
    Comparison(String),
    #[error("the seccomp profile compiles to more than 4096 instructions")]
    TooLong,
}

impl SeccompError {
    /// Whose fault this is: the profile's, which the user gave.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::Invalid
    }
}

fn action(name: &str, errno: Option<u32>, default_errno: u32) -> Result<u32, SeccompError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_ERRNO" => RET_ERRNO | (errno.unwrap_or(default_errno) & 0xffff),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_PROCESS" | "SCMP_ACT_KILL_THREAD" => RET_KILL_PROCESS,
        "SCMP_ACT_LOG" => RET_LOG,
        other => return Err(SeccompError::Action(other.to_string())),
    })
}

/// The x86_64 number of a syscall.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Compiles the spec's seccomp object (as JSON) into BPF.
pub fn compile(seccomp: &Value) -> Result<Vec<Insn>, SeccompError> {
    let default_errno = seccomp["defaultErrnoRet"].as_u64().unwrap_or(1) as u32;
    let default = action(
        seccomp["defaultAction"]
            .as_str()
            .unwrap_or("SCMP_ACT_ERRNO"),
        None,
        default_errno,
    )?;
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_ERRNO | 1),
    ];
    // Rules without arguments first, grouped by their action: one check per syscall.
    let mut plain: BTreeMap<u32, u32> = BTreeMap::new();
    let mut with_args = Vec::new();
    for g in seccomp["syscalls"].as_array().into_iter().flatten() {
        let act = action(
            g["action"].as_str().unwrap_or(""),
            g["errnoRet"].as_u64().map(|e| e as u32),
            default_errno,
        )?;
        let args = g["args"].as_array().cloned().unwrap_or_default();
        for name in g["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
        {
            let Some(nr) = syscall_number(name) else {
                continue;
            }; // not on this arch
            if args.is_empty() {
                plain.entry(nr).or_insert(act);
            } else {
                with_args.push((nr, act, args.clone()));
            }
        }
    }
    // Argument rules come before plain ones, so a plain rule for the same syscall does
    // not shadow them; only single-argument rules are supported (all Docker needs).
    for (nr, act, args) in with_args {
        if plain.contains_key(&nr) {
            continue;
        }
        if args.len() != 1 {
            return Err(SeccompError::SeveralConditions);
        }
        let a = &args[0];
        let index = a["index"].as_u64().unwrap_or(0) as u32;
        if index > 5 {
            return Err(SeccompError::ArgumentIndex(index));
        }
        let value = a["value"].as_u64().unwrap_or(0);
        let two = a["valueTwo"].as_u64().unwrap_or(0);
        let load_arg = stmt(LD_W_ABS, OFF_ARGS + 8 * index); // low 32 bits (little endian)
        let block: Vec<Insn> = match a["op"].as_str().unwrap_or("") {
            "SCMP_CMP_EQ" => vec![load_arg, jump(JEQ_K, value as u32, 0, 1), stmt(RET_K, act)],
            "SCMP_CMP_NE" => vec![load_arg, jump(JEQ_K, value as u32, 1, 0), stmt(RET_K, act)],
            "SCMP_CMP_MASKED_EQ" => vec![
                load_arg,
                stmt(AND_K, value as u32),
                jump(JEQ_K, two as u32, 0, 1),
                stmt(RET_K, act),
            ],
            other => return Err(SeccompError::Comparison(other.to_string())),
        };
        p.push(jump(JEQ_K, nr, 0, block.len() as u8 + 1));
        p.extend(block);
        p.push(stmt(LD_W_ABS, OFF_NR));
    }
    for (nr, act) in plain {
        p.push(jump(JEQ_K, nr, 0, 1));
        p.push(stmt(RET_K, act));
    }
    p.push(stmt(RET_K, default));
    if p.len() > 4096 {
        return Err(SeccompError::TooLong);
    }
    Ok(p)
}

/// Installs a compiled filter on the calling thread (needs CAP_SYS_ADMIN or
/// no_new_privs).
/// The compiled filter in a container's bundle, written by the daemon (which compiles
/// each distinct profile once) so that starting a container does not compile it again.
pub const COMPILED: &str = "seccomp.bpf";

/// The filter as bytes: per instruction code (u16), jt, jf, k (u32), little-endian.
pub fn to_bytes(filter: &[Insn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(filter.len() * 8);
    for i in filter {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out
}

/// The filter compiled into the bundle in `dir`, if there is a whole one.
pub fn read_compiled(dir: &std::path::Path) -> Option<Vec<Insn>> {
    from_bytes(&std::fs::read(dir.join(COMPILED)).ok()?)
}

/// Reads [`to_bytes`]' form back; `None` unless it is a whole program the kernel takes.
pub fn from_bytes(b: &[u8]) -> Option<Vec<Insn>> {
    if b.is_empty() || !b.len().is_multiple_of(8) || b.len() / 8 > 4096 {
        return None;
    }
    Some(
        b.chunks_exact(8)
            .map(|c| Insn {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

pub fn install(filter: &[Insn]) -> io::Result<()> {
    let insns: Vec<libc::sock_filter> = filter
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as u16,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `insns`, which outlives the call; the kernel copies it.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A tiny interpreter of the subset of BPF `compile` emits, for tests.
pub fn evaluate(p: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut acc: u32 = 0;
    let mut pc = 0;
    while pc < p.len() {
        let i = p[pc];
        match i.code {
            LD_W_ABS => {
                acc = match i.k {
                    OFF_NR => nr,
                    OFF_ARCH => arch,
                    k => args[((k - OFF_ARGS) / 8) as usize] as u32,
                }
            }
            AND_K => acc &= i.k,
            JEQ_K => {
                pc += 1 + usize::from(if acc == i.k { i.jt } else { i.jf });
                continue;
            }
            JGE_K => {
                pc += 1 + usize::from(if acc >= i.k { i.jt } else { i.jf });
                continue;
            }
            RET_K => return i.k,
            _ => unreachable!("unknown instruction"),
        }
        pc += 1;
    }
    unreachable!("a filter always ends in a return")
}

/// x86_64 syscall numbers of the syscalls profiles name.
const SYSCALLS: &[(&str, u32)] = &[
    ("read", 0),
    ("write", 1),
    ("open", 2),
    ("close", 3),
    ("stat", 4),
    ("fstat", 5),
    ("lstat", 6),
    ("poll", 7),
    ("lseek", 8),
    ("mmap", 9),
    ("mprotect", 10),
    ("munmap", 11),
    ("brk", 12),
    ("rt_sigaction", 13),
    ("rt_sigprocmask", 14),
    ("rt_sigreturn", 15),
    ("ioctl", 16),
    ("pread64", 17),
    ("pwrite64", 18),
    ("readv", 19),
    ("writev", 20),
    ("access", 21),
    ("pipe", 22),
    ("select", 23),
    ("sched_yield", 24),
    ("mremap", 25),
    ("msync", 26),
    ("mincore", 27),
    ("madvise", 28),
    ("shmget", 29),
    ("shmat", 30),
    ("shmctl", 31),
    ("dup", 32),
    ("dup2", 33),
    ("pause", 34),
    ("nanosleep", 35),
    ("getitimer", 36),
    ("alarm", 37),
    ("setitimer", 38),
    ("getpid", 39),
    ("sendfile", 40),
    ("socket", 41),
    ("connect", 42),
    ("accept", 43),
    ("sendto", 44),
    ("recvfrom", 45),
    ("sendmsg", 46),
    ("recvmsg", 47),
    ("shutdown", 48),
    ("bind", 49),
    ("listen", 50),
    ("getsockname", 51),
    ("getpeername", 52),
    ("socketpair", 53),
    ("setsockopt", 54),
    ("getsockopt", 55),
    ("clone", 56),
    ("fork", 57),
    ("vfork", 58),
    ("execve", 59),
    ("exit", 60),
    ("wait4", 61),
    ("kill", 62),
    ("uname", 63),
    ("semget", 64),
    ("semop", 65),
    ("semctl", 66),
    ("shmdt", 67),
    ("msgget", 68),
    ("msgsnd", 69),
    ("msgrcv", 70),
    ("msgctl", 71),
    ("fcntl", 72),
    ("flock", 73),
    ("fsync", 74),
    ("fdatasync", 75),
    ("truncate", 76),
    ("ftruncate", 77),
    ("getdents", 78),
    ("getcwd", 79),
    ("chdir", 80),
    ("fchdir", 81),
    ("rename", 82),
    ("mkdir", 83),
    ("rmdir", 84),
    ("creat", 85),
    ("link", 86),
    ("unlink", 87),
    ("symlink", 88),
    ("readlink", 89),
    ("chmod", 90),
    ("fchmod", 91),
    ("chown", 92),
    ("fchown", 93),
    ("lchown", 94),
    ("umask", 95),
    ("gettimeofday", 96),
    ("getrlimit", 97),
    ("getrusage", 98),
    ("sysinfo", 99),
    ("times", 100),
    ("ptrace", 101),
    ("getuid", 102),
    ("syslog", 103),
    ("getgid", 104),
    ("setuid", 105),
    ("setgid", 106),
    ("geteuid", 107),
    ("getegid", 108),
    ("setpgid", 109),
    ("getppid", 110),
    ("getpgrp", 111),
    ("setsid", 112),
    ("setreuid", 113),
    ("setregid", 114),
    ("getgroups", 115),
    ("setgroups", 116),
    ("setresuid", 117),
    ("getresuid", 118),
    ("setresgid", 119),
    ("getresgid", 120),
    ("getpgid", 121),
    ("setfsuid", 122),
    ("setfsgid", 123),
    ("getsid", 124),
    ("capget", 125),
    ("capset", 126),
    ("rt_sigpending", 127),
    ("rt_sigtimedwait", 128),
    ("rt_sigqueueinfo", 129),
    ("rt_sigsuspend", 130),
    ("sigaltstack", 131),
    ("utime", 132),
    ("mknod", 133),
    ("personality", 135),
    ("statfs", 137),
    ("fstatfs", 138),
    ("getpriority", 140),
    ("setpriority", 141),
    ("sched_setparam", 142),
    ("sched_getparam", 143),
    ("sched_setscheduler", 144),
    ("sched_getscheduler", 145),
    ("sched_get_priority_max", 146),
    ("sched_get_priority_min", 147),
    ("sched_rr_get_interval", 148),
    ("mlock", 149),
    ("munlock", 150),
    ("mlockall", 151),
    ("munlockall", 152),
    ("vhangup", 153),
    ("modify_ldt", 154),
    ("prctl", 157),
    ("arch_prctl", 158),
    ("adjtimex", 159),
    ("setrlimit", 160),
    ("chroot", 161),
    ("sync", 162),
    ("acct", 163),
    ("settimeofday", 164),
    ("mount", 165),
    ("umount2", 166),
    ("reboot", 169),
    ("sethostname", 170),
    ("setdomainname", 171),
    ("iopl", 172),
    ("ioperm", 173),
    ("init_module", 175),
    ("delete_module", 176),
    ("quotactl", 179),
    ("gettid", 186),
    ("readahead", 187),
    ("setxattr", 188),
    ("lsetxattr", 189),
    ("fsetxattr", 190),
    ("getxattr", 191),
    ("lgetxattr", 192),
    ("fgetxattr", 193),
    ("listxattr", 194),
    ("llistxattr", 195),
    ("flistxattr", 196),
    ("removexattr", 197),
    ("lremovexattr", 198),
    ("fremovexattr", 199),
    ("tkill", 200),
    ("time", 201),
    ("futex", 202),
    ("sched_setaffinity", 203),
    ("sched_getaffinity", 204),
    ("set_thread_area", 205),
    ("io_setup", 206),
    ("io_destroy", 207),
    ("io_getevents", 208),
    ("io_submit", 209),
    ("io_cancel", 210),
    ("get_thread_area", 211),
    ("lookup_dcookie", 212),
    ("epoll_create", 213),
    ("epoll_ctl_old", 214),
    ("epoll_wait_old", 215),
    ("remap_file_pages", 216),
    ("getdents64", 217),
    ("set_tid_address", 218),
    ("restart_syscall", 219),
    ("semtimedop", 220),
    ("fadvise64", 221),
    ("timer_create", 222),
    ("timer_settime", 223),
    ("timer_gettime", 224),
    ("timer_getoverrun", 225),
    ("timer_delete", 226),
    ("clock_settime", 227),
    ("clock_gettime", 228),
    ("clock_getres", 229),
    ("clock_nanosleep", 230),
    ("exit_group", 231),
    ("epoll_wait", 232),
    ("epoll_ctl", 233),
    ("tgkill", 234),
    ("utimes", 235),
    ("mbind", 237),
    ("set_mempolicy", 238),
    ("get_mempolicy", 239),
    ("mq_open", 240),
    ("mq_unlink", 241),
    ("mq_timedsend", 242),
    ("mq_timedreceive", 243),
    ("mq_notify", 244),
    ("mq_getsetattr", 245),
    ("waitid", 247),
    ("ioprio_set", 251),
    ("ioprio_get", 252),
    ("inotify_init", 253),
    ("inotify_add_watch", 254),
    ("inotify_rm_watch", 255),
    ("openat", 257),
    ("mkdirat", 258),
    ("mknodat", 259),
    ("fchownat", 260),
    ("futimesat", 261),
    ("newfstatat", 262),
    ("unlinkat", 263),
    ("renameat", 264),
    ("linkat", 265),
    ("symlinkat", 266),
    ("readlinkat", 267),
    ("fchmodat", 268),
    ("faccessat", 269),
    ("pselect6", 270),
    ("ppoll", 271),
    ("unshare", 272),
    ("set_robust_list", 273),
    ("get_robust_list", 274),
    ("splice", 275),
    ("tee", 276),
    ("sync_file_range", 277),
    ("vmsplice", 278),
    ("utimensat", 280),
    ("epoll_pwait", 281),
    ("signalfd", 282),
    ("timerfd_create", 283),
    ("eventfd", 284),
    ("fallocate", 285),
    ("timerfd_settime", 286),
    ("timerfd_gettime", 287),
    ("accept4", 288),
    ("signalfd4", 289),
    ("eventfd2", 290),
    ("epoll_create1", 291),
    ("dup3", 292),
    ("pipe2", 293),
    ("inotify_init1", 294),
    ("preadv", 295),
    ("pwritev", 296),
    ("rt_tgsigqueueinfo", 297),
    ("perf_event_open", 298),
    ("recvmmsg", 299),
    ("fanotify_init", 300),
    ("fanotify_mark", 301),
    ("prlimit64", 302),
    ("name_to_handle_at", 303),
    ("open_by_handle_at", 304),
    ("clock_adjtime", 305),
    ("syncfs", 306),
    ("sendmmsg", 307),
    ("setns", 308),
    ("getcpu", 309),
    ("process_vm_readv", 310),
    ("process_vm_writev", 311),
    ("kcmp", 312),
    ("finit_module", 313),
    ("sched_setattr", 314),
    ("sched_getattr", 315),
    ("renameat2", 316),
    ("seccomp", 317),
    ("getrandom", 318),
    ("memfd_create", 319),
    ("bpf", 321),
    ("execveat", 322),
    ("membarrier", 324),
    ("mlock2", 325),
    ("copy_file_range", 326),
    ("preadv2", 327),
    ("pwritev2", 328),
    ("pkey_mprotect", 329),
    ("pkey_alloc", 330),
    ("pkey_free", 331),
    ("statx", 332),
    ("rseq", 334),
    ("pidfd_send_signal", 424),
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    ("open_tree", 428),
    ("move_mount", 429),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("fspick", 433),
    ("pidfd_open", 434),
    ("clone3", 435),
    ("close_range", 436),
    ("openat2", 437),
    ("pidfd_getfd", 438),
    ("faccessat2", 439),
    ("process_madvise", 440),
    ("epoll_pwait2", 441),
    ("mount_setattr", 442),
    ("quotactl_fd", 443),
    ("landlock_create_ruleset", 444),
    ("landlock_add_rule", 445),
    ("landlock_restrict_self", 446),
    ("memfd_secret", 447),
    ("process_mrelease", 448),
    ("futex_waitv", 449),
    ("set_mempolicy_home_node", 450),
    ("io_pgetevents", 333),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_beyond_the_compiler_are_the_users_to_fix() {
        let profile = |rule: Value| serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]});
        let e = compile(&profile(serde_json::json!(
            {"names": ["mkdir"], "action": "SCMP_ACT_TRAP"}
        )))
        .unwrap_err();
        assert_eq!(e, SeccompError::Action("SCMP_ACT_TRAP".into()));
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        let e = compile(&profile(serde_json::json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_GT"}]
        })))
        .unwrap_err();
        assert_eq!(e, SeccompError::Comparison("SCMP_CMP_GT".into()));
        assert_eq!(e.to_string(), "unsupported seccomp comparison SCMP_CMP_GT");
    }

    fn nr(n: &str) -> u32 {
        syscall_number(n).unwrap()
    }

    #[test]
    fn docker_default_for_default_caps() {
        let caps: Vec<String> = crate::spec::DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = compile(&resolve(&docker_default(), &caps)).unwrap();
        let run =
            |name: &str, a0: u64| evaluate(&p, AUDIT_ARCH_X86_64, nr(name), [a0, 0, 0, 0, 0, 0]);
        assert_eq!(run("read", 0), RET_ALLOW);
        assert_eq!(run("execve", 0), RET_ALLOW);
        assert_eq!(run("chroot", 0), RET_ALLOW, "CAP_SYS_CHROOT is a default");
        assert_eq!(run("mount", 0), RET_ERRNO | 1, "no CAP_SYS_ADMIN: EPERM");
        assert_eq!(run("unshare", 0), RET_ERRNO | 1);
        assert_eq!(run("reboot", 0), RET_ERRNO | 1);
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_X86_64, 246, [0; 6]),
            RET_ERRNO | 1,
            "kexec_load: never listed"
        );
        assert_eq!(run("clone", 0x11), RET_ALLOW, "plain fork-like clone");
        assert_eq!(
            run("clone", 0x1000_0000),
            RET_ERRNO | 1,
            "CLONE_NEWUSER refused"
        );
        assert_eq!(
            run("clone3", 0),
            RET_ERRNO | 38,
            "ENOSYS, so libc falls back to clone"
        );
        assert_eq!(run("socket", 2), RET_ALLOW);
        assert_eq!(run("socket", 40), RET_ERRNO | 1, "AF_VSOCK refused");
        assert_eq!(run("personality", 8), RET_ALLOW);
        assert_eq!(run("personality", 0x0040_0000), RET_ERRNO | 1);
        // Other ABIs.
        assert_eq!(
            evaluate(&p, 0x4000_0003, 3, [0; 6]),
            RET_KILL_PROCESS,
            "i386 refused"
        );
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_X86_64, nr("read") | X32_SYSCALL_BIT, [0; 6]),
            RET_ERRNO | 1,
            "x32 refused"
        );
    }

    #[test]
    fn capabilities_open_more() {
        let mut caps: Vec<String> = crate::spec::DEFAULT_CAPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        caps.push("CAP_SYS_ADMIN".into());
        let p = compile(&resolve(&docker_default(), &caps)).unwrap();
        let run =
            |name: &str, a0: u64| evaluate(&p, AUDIT_ARCH_X86_64, nr(name), [a0, 0, 0, 0, 0, 0]);
        assert_eq!(run("mount", 0), RET_ALLOW);
        assert_eq!(run("clone", 0x1000_0000), RET_ALLOW);
        assert_eq!(run("clone3", 0), RET_ALLOW);
        assert_eq!(run("ptrace", 0), RET_ALLOW);
    }

    #[test]
    fn reads_docker_format_files() {
        let text = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
        let profile: Profile = serde_json::from_str(text).unwrap();
        let p = compile(&resolve(&profile, &[])).unwrap();
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_X86_64, nr("mkdir"), [0; 6]),
            RET_ERRNO | 13
        );
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_X86_64, nr("mount"), [0; 6]),
            RET_ALLOW
        );
    }
}
