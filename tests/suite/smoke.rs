//! The quickest check that the cache works end to end, on every engine:
//! every block of a 64-block file read through an 8-block cache equals the
//! file, and a block written through the cache reaches the file at flush.

use crate::common;
use common::*;

#[test]
fn smoke() {
    for kind in engines() {
        let f = patterned_file(64 * 4096);
        let cache = cache(kind, 4096, 8);
        let dev = cache.open(f.path()).unwrap();
        assert_eq!(cache.device_blocks(dev).unwrap(), 64);
        for b in 0..64u64 {
            let g = cache.read(dev, b).unwrap();
            assert_eq!(
                &g[..],
                &file_bytes(f.path(), b * 4096, 4096)[..],
                "{kind:?} block {b}"
            );
        }
        {
            let mut w = cache.write(dev, 5).unwrap();
            w.fill(0xee);
        }
        cache.flush().unwrap();
        assert!(file_bytes(f.path(), 5 * 4096, 4096).iter().all(|&b| b == 0xee));
        println!("{kind:?} {:?}", cache.stats());
        cache.shutdown().unwrap();
    }
}
