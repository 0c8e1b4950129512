//! Envoy's descriptors, the subset build.rs keeps (the bootstrap and the implemented extensions).
use prost_reflect::DescriptorPool;

static ENVOY_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin"));

/// The descriptor pool is large (all of Envoy's API); it is built when config is read and dropped
/// right after, so it never sits in the proxy's resident memory.
pub fn descriptor_pool() -> DescriptorPool {
    let pool = DescriptorPool::decode(ENVOY_DESCRIPTORS).expect("envoy-types ships a valid descriptor set");
    release_descriptor_pages();
    pool
}

/// The 3 MB descriptor blob lives in the binary's read-only data; once decoded, its pages are
/// dropped from the resident set (they are file-backed and fault back in if ever needed again).
fn release_descriptor_pages() {
    let page = 4096usize;
    let start = ENVOY_DESCRIPTORS.as_ptr() as usize;
    let end = start + ENVOY_DESCRIPTORS.len();
    let (a, b) = (start.div_ceil(page) * page, end / page * page);
    if b > a {
        // SAFETY: the range lies inside an immutable static; MADV_DONTNEED on a private read-only
        // file mapping only discards page-table entries, the contents stay those of the file.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
        }
    }
}
