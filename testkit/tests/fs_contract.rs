//! The `Fs` contract against both filesystem adapters.

use lanspread_capfs::CapFs;
use lanspread_memfs::MemFs;
use lanspread_testkit::contract::fs_contract;
use std::sync::Arc;

/// The contract on `fs`, rooted at `root`, with real symbolic links planted
/// where any user may make them (Unix; Windows needs a privilege).
async fn capfs_contract(fs: CapFs, root: &std::path::Path) {
    #[cfg(unix)]
    let plant = |path: &str, target: &str| std::os::unix::fs::symlink(target, root.join(path)).unwrap();
    #[cfg(unix)]
    let symlink: Option<lanspread_testkit::contract::PlantSymlink<'_>> = Some(&plant);
    #[cfg(not(unix))]
    let symlink = {
        let _ = root;
        None
    };
    fs_contract(Arc::new(fs), symlink).await;
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
    capfs_contract(fs, &root).await;
}

/// The same contract with the component-by-component walk that kernels
/// without `openat2` use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capfs_without_openat2_honours_the_fs_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let fs = CapFs::open_walking(&root).unwrap();
    capfs_contract(fs, &root).await;
}
