//! The `Fs` contract against both filesystem adapters.

use lanspread_capfs::CapFs;
use lanspread_memfs::MemFs;
use lanspread_testkit::contract::fs_contract;
use std::sync::Arc;

/// Plants real symbolic links beneath `root` where any user may (Unix);
/// `None` on Windows, where making one needs a privilege.
fn plant_symlink(root: &std::path::Path) -> Option<Box<dyn Fn(&str, &str) + '_>> {
    #[cfg(unix)]
    return Some(Box::new(move |path, target| std::os::unix::fs::symlink(target, root.join(path)).unwrap()));
    #[cfg(not(unix))]
    {
        let _ = root;
        None
    }
}

#[tokio::test]
async fn memfs_honours_the_fs_contract() {
    let fs = MemFs::new();
    let planted = fs.clone();
    fs_contract(Arc::new(fs), Some(&|path, target| planted.symlink(path, target))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capfs_honours_the_fs_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let fs = CapFs::open(&root).unwrap();
    fs_contract(Arc::new(fs), plant_symlink(&root).as_deref()).await;
}

/// The same contract with the component-by-component walk that kernels
/// without `openat2` use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capfs_without_openat2_honours_the_fs_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let fs = CapFs::open_walking(&root).unwrap();
    fs_contract(Arc::new(fs), plant_symlink(&root).as_deref()).await;
}
