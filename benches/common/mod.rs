//! What both benchmarks need to find: the librclone.so they load or put
//! beside the msync binary.

use std::path::{Path, PathBuf};

/// `$MSYNC_LIBRCLONE`, else the library `make` leaves in target/.
pub fn librclone_path() -> PathBuf {
    let path = std::env::var_os("MSYNC_LIBRCLONE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/librclone/librclone.so")
        });
    assert!(
        path.is_file(),
        "librclone.so not found at {}: build it with `make release`, or run `make bench`",
        path.display()
    );
    path
}
