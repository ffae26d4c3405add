//! What the kernel counts about each loaded program: invocations it skipped, and run counts
//! and times. `recursion_misses` needs a raw `bpf(2)` call, since aya does not expose it.

use super::{catalogue, Probe};

/// `bpf_prog_info.recursion_misses` of a program (Linux ≥ 5.12), read with
/// BPF_OBJ_GET_INFO_BY_FD; aya's ProgramInfo does not expose it.
fn prog_recursion_misses(fd: std::os::fd::BorrowedFd) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid bpf_prog_info.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = [0u8; 128];
    let request = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: &mut info as *mut _ as u64,
    };
    // SAFETY: InfoByFd is the info_by_fd member of union bpf_attr; attr is larger than it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            &request as *const _ as *const u8,
            attr.as_mut_ptr(),
            std::mem::size_of::<InfoByFd>(),
        );
    }
    // SAFETY: a valid bpf(2) call; the kernel writes at most info_len bytes into info.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

impl Probe {
    /// Per program, the invocations the kernel skipped because another BPF program was
    /// already running on that CPU (`recursion_misses`: a tracepoint fired in an interrupt
    /// that had interrupted one of ours). Those events were never seen: reported, not hidden.
    pub fn recursion_misses(&self) -> Vec<(&'static str, u64)> {
        catalogue::program_names()
            .filter_map(|name| {
                let fd = self.ebpf.program(name)?.fd().ok()?;
                Some((
                    name,
                    prog_recursion_misses(std::os::fd::AsFd::as_fd(fd)).ok()?,
                ))
            })
            .collect()
    }

    /// (program name, run count, run time ns) from the kernel's BPF stats; zero unless
    /// `kernel.bpf_stats_enabled` is on.
    pub fn program_stats(&self) -> Vec<(&'static str, u64, u64)> {
        catalogue::program_names()
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((name, info.run_count(), info.run_time().as_nanos() as u64))
            })
            .collect()
    }
}
