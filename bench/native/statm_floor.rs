// The native floor for bench/memory_read.rb: the same pread loop as SidekiqRust::Memory.rss, with no Ruby.
// Built by the benchmark with `rustc -O`; prints nanoseconds per call.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let file = File::open("/proc/self/statm").expect("open /proc/self/statm");
    let mut buf = [0u8; 160];
    let mut sum = 0u64;
    let start = Instant::now();
    for _ in 0..iterations {
        let n = file.read_at(&mut buf, 0).expect("pread");
        let resident = buf[..n]
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|f| std::str::from_utf8(f).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        sum = sum.wrapping_add(resident);
    }
    let elapsed = start.elapsed();
    println!("{:.1} {}", elapsed.as_nanos() as f64 / iterations as f64, sum % 10);
}
