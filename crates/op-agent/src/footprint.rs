//! What the agent keeps resident (issue 25 item 2: an idle agent under 10 MB): start-up leaves
//! the executable's read-only pages and much free heap behind, and so does a burst of runs. Ten
//! seconds after start, and again once the agent has been without finished runs for
//! [`SETTLE`] after some ([`work_done`]), it drops the executable's clean read-only pages
//! ([`release_startup_pages`]) and returns the heap's free pages ([`trim`]); and every few
//! minutes the heap again.

use std::sync::LazyLock;
use std::time::Duration;

use tokio::sync::Notify;

/// How long the agent must have finished no run before it lets go of what the runs touched.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Told of each finished run.
static WORK: LazyLock<Notify> = LazyLock::new(Notify::new);

/// A run finished: once [`SETTLE`] passes without another, the agent trims what it holds.
pub fn work_done() {
    WORK.notify_one();
}

/// Ten seconds after start (the jobs loaded, the first sync made), lets go of what start-up
/// left resident: the executable's start-up pages ([`release_startup_pages`]), once, and the
/// heap's free pages, then again every few minutes: start-up (flags, config, the state database,
/// the first sync) frees far more than an idle agent keeps, and glibc returns little of it on
/// its own. After runs the same again, once they have settled: a fire touches code and heap an
/// idle agent does not need (it faults back in from the page cache at the next fire, a few
/// hundred minor faults). A few microseconds of CPU each time.
pub async fn trim() {
    tokio::time::sleep(SETTLE).await;
    release();
    let mut periodic = tokio::time::interval(Duration::from_secs(300));
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    periodic.tick().await;
    loop {
        tokio::select! {
            _ = periodic.tick() => trim_heap(),
            _ = WORK.notified() => {
                // Wait until no run has finished for SETTLE.
                while tokio::time::timeout(SETTLE, WORK.notified()).await.is_ok() {}
                release();
            }
        }
    }
}

fn release() {
    release_startup_pages();
    trim_heap();
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes the arena locks
    // itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the pages of the executable's read-only segments (code, constants and the relocation
/// table) from the resident set, once, after start-up. Start-up touches much that an idle agent
/// never runs again: flag parsing, the config, the state database's migrations, enrolment, and
/// the loader's pass over the whole relocation table (`.rela.dyn`, about 1 MiB that nothing
/// reads after `main` begins). Those pages are clean and backed by the file, so `MADV_DONTNEED`
/// only unmaps them: what the agent runs from then on faults back in (from the page cache) and
/// stays, and the rest is no longer held (BENCHMARKS.md, agent idle RSS). Writable segments,
/// relocated read-only data included, are never touched. Does nothing if the executable has
/// text relocations (its code pages would not be clean) or its headers are not found.
pub fn release_startup_pages() {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        for (start, len) in read_only_segments() {
            // Whole pages inside the segment only.
            let first = start.next_multiple_of(page);
            let end = (start + len) / page * page;
            if end > first {
                // SAFETY: the range lies inside a read-only, file-backed private mapping of the
                // executable that was never written (no text relocations); MADV_DONTNEED drops
                // its pages and any later access reads them from the file again, unchanged.
                unsafe {
                    libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
                }
            }
        }
    }
}

/// The address and size of each loaded segment of the main executable that is not writable,
/// from its program headers; none when its dynamic section asks for text relocations.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn read_only_segments() -> Vec<(usize, usize)> {
    /// An entry of the dynamic section (`Elf64_Dyn`).
    #[repr(C)]
    struct Dyn {
        tag: i64,
        val: u64,
    }
    const DT_NULL: i64 = 0;
    const DT_TEXTREL: i64 = 22;
    const DT_FLAGS: i64 = 30;
    const DF_TEXTREL: u64 = 0x4;
    const PF_W: u32 = 0x2;

    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the object and our `data` pointer;
        // the dynamic section it points to ends with DT_NULL.
        unsafe {
            let out = &mut *(data.cast::<Vec<(usize, usize)>>());
            let info = &*info;
            let base = info.dlpi_addr as usize;
            let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            let mut textrel = false;
            if let Some(dynamic) = phdrs.iter().find(|p| p.p_type == libc::PT_DYNAMIC) {
                let mut d = (base + dynamic.p_vaddr as usize) as *const Dyn;
                while (*d).tag != DT_NULL {
                    textrel |= (*d).tag == DT_TEXTREL
                        || ((*d).tag == DT_FLAGS && (*d).val & DF_TEXTREL != 0);
                    d = d.add(1);
                }
            }
            if !textrel {
                out.extend(
                    phdrs
                        .iter()
                        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & PF_W == 0)
                        .map(|p| (base + p.p_vaddr as usize, p.p_memsz as usize)),
                );
            }
        }
        1 // The first object is the executable: stop there.
    }
    let mut found: Vec<(usize, usize)> = Vec::new();
    // SAFETY: the callback only reads the headers dl_iterate_phdr hands it and fills `found`.
    unsafe {
        libc::dl_iterate_phdr(Some(first_object), (&raw mut found).cast::<libc::c_void>());
    }
    found
}

#[cfg(test)]
mod tests {
    /// Resident file-backed kB of this process (`RssFile`).
    fn rss_file_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    #[test]
    fn start_up_pages_are_released_and_the_code_still_runs() {
        let segments = super::read_only_segments();
        assert!(
            segments.len() >= 2,
            "the test binary has read-only and code segments: {segments:?}"
        );
        let before = rss_file_kib();
        super::release_startup_pages();
        let after = rss_file_kib();
        assert!(
            after + 512 < before,
            "resident file pages went from {before} kB to {after} kB"
        );
        // Code and constants fault back in from the file, unchanged.
        let text = format!(
            "{:?}",
            std::collections::BTreeMap::from([(1, "one"), (2, "two")])
        );
        assert_eq!(text, r#"{1: "one", 2: "two"}"#);
        let parsed: serde_json::Value = serde_json::from_str(r#"{"a": [1, 2.5, "x"]}"#).unwrap();
        assert_eq!(parsed["a"][1], 2.5);
    }
}
