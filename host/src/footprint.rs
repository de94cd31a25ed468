//! Handing loading's pages back to the kernel.
//!
//! Loading runs code and reads data once: the configuration and the twin, the compiled plugins
//! deserialized and checked, Cranelift when a plugin is new. Those clean pages of edgeguard's
//! own file mappings (the binary, the compiled plugins) stay mapped and count in its resident
//! memory although only the page cache holds them. Once loading is done, [`release_loading_pages`]
//! asks the kernel to take them back (`MADV_PAGEOUT`, Linux 5.4 and later; a no-op before) and
//! to read them in again a page at a time (`MADV_RANDOM`: without it each fault brings the
//! readahead window along, up to 128 KiB of code nobody runs): what the collections run
//! afterwards faults back in, so what stays resident is the working set (a minute after start,
//! 3.1 MiB of the `release` binary's code where readahead made it 5.9). Pages still in the page
//! cache come back with their neighbours all the same (the kernel's fault-around), so after a
//! burst much of the code it ran does. Anonymous memory and writable mappings are left alone.

/// Gives glibc's malloc one arena, and fixes its thresholds at 128 KiB. By default it makes up
/// to eight arenas per core, one per thread that allocates at once; each keeps what a burst made
/// it grow to, so the worker threads of a flood of events held tens of MB they no longer used
/// (with two, the second still held 5 to 9 MiB at a flood's peak that the first could not
/// reuse; each thread's cache keeps the one arena's lock off the common path). And its mmap threshold follows the largest block freed, up to 32 MiB: after the first
/// 4 MiB snapshot or feed buffer, every later one came from the heap and stayed there. Fixed,
/// large blocks are mapped and unmapped as they come and go, and a free top of the heap past
/// 128 KiB goes back to the kernel. (musl has one heap and maps large blocks: nothing to do.)
pub fn limit_heap_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets tunables; called before the runtime's threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Hands the free memory at the top of the heap, and whole free pages inside it, back to the
/// kernel after a burst (glibc keeps it otherwise). Costs a walk of the heap: call it rarely.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Read-only file mappings of this process, as `(start, length)`.
fn file_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if !path.starts_with('/') || perms.contains('w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (start, end) = (
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            );
            (end > start).then_some((start, end - start))
        })
        .collect()
}

/// Advises the kernel to reclaim the clean pages of this process's read-only file mappings.
/// Returns the bytes of mappings advised.
pub fn release_loading_pages() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, len) in file_mappings(&maps) {
        // SAFETY: the range is a mapping of this process as the kernel lists it; RANDOM only
        // changes how pages are read in, PAGEOUT only drops clean pages it can read back,
        // neither changes memory contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_RANDOM);
            if libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT) == 0 {
                advised += len;
            }
        }
    }
    advised
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_chosen() {
        let maps = "\
55d0a0000000-55d0a0084000 r--p 00000000 fe:00 1114158 /usr/bin/edgeguard
55d0a0084000-55d0a0b70000 r-xp 00084000 fe:00 1114158 /usr/bin/edgeguard
55d0a0e79000-55d0a0edc000 rw-p 00e79000 fe:00 1114158 /usr/bin/edgeguard
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 r-xp 00001000 fe:00 42 /var/cache/edgeguard/abc.cwasm
7ffd0000000-7ffd0021000 rw-p 00000000 00:00 0 [stack]
7ffd1000000-7ffd1002000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            file_mappings(maps),
            vec![
                (0x55d0a0000000, 0x84000),
                (0x55d0a0084000, 0xaec000),
                (0x7f0000100000, 0x100000)
            ]
        );
    }

    #[test]
    fn releasing_keeps_this_process_running() {
        let advised = release_loading_pages();
        assert!(
            advised > 0,
            "the test binary itself is a read-only file mapping"
        );
        // Code just handed back (this module's) runs again: it faults in from the page cache.
        assert_eq!(
            file_mappings("7f0000100000-7f0000200000 r-xp 00001000 fe:00 42 /x").len(),
            1
        );
    }
}
