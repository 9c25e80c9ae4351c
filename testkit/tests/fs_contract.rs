//! The `Fs` contract against both filesystem adapters.

use lanspread_capfs::CapFs;
use lanspread_memfs::MemFs;
use lanspread_testkit::contract::fs_contract;
use std::sync::Arc;

#[tokio::test]
async fn memfs_honours_the_fs_contract() {
    let fs = MemFs::new();
    let planted = fs.clone();
    fs_contract(Arc::new(fs), &|path, target| planted.symlink(path, target)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capfs_honours_the_fs_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let fs = CapFs::open(&root).unwrap();
    fs_contract(Arc::new(fs), &|path, target| std::os::unix::fs::symlink(target, root.join(path)).unwrap()).await;
}

/// The same contract with the component-by-component walk that kernels
/// without `openat2` use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capfs_without_openat2_honours_the_fs_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let fs = CapFs::open_walking(&root).unwrap();
    fs_contract(Arc::new(fs), &|path, target| std::os::unix::fs::symlink(target, root.join(path)).unwrap()).await;
}
