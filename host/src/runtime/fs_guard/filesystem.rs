//! The guarded `wasi:filesystem` view: `preopens` and `types` implemented
//! for [`FsView`], every method delegating to wasmtime-wasi's.
//!
//! Only `symlink-at` (the symlink policy), `open-at` (special files refused,
//! descriptors tracked per mount), `write`, `set-size` and the write and
//! append streams (quotas) add anything; no path is resolved here.

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorFlags, DescriptorType, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
    OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsError, FsResult};

use super::{FsView, QuotaExceeded, SymlinkPolicy, refused};

/// A second handle on the same resource, for a delegated call.
fn again<T: 'static>(resource: &Resource<T>) -> Resource<T> {
    Resource::new_borrow(resource.rep())
}

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let dirs = preopens::Host::get_directories(&mut self.fs)?;
        for (fd, name) in &dirs {
            let key = name.trim_end_matches('/');
            let Some(index) = self.guard.mounts.iter().position(|m| m.guest == key) else {
                continue;
            };
            self.guard.descriptors.insert(fd.rep(), index);
            if self.guard.mounts[index].root.is_none() {
                self.guard.mounts[index].root = self.dir_handle(fd);
            }
        }
        Ok(dirs)
    }
}

impl types::Host for FsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        if self
            .fs
            .table
            .get(&err)
            .is_ok_and(|e| e.downcast_ref::<QuotaExceeded>().is_some())
        {
            return Ok(Some(ErrorCode::Quota));
        }
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for FsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.fs, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.fs, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.fs, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorType> {
        HostDescriptor::get_type(&mut self.fs, fd).await
    }

    /// Growth counts against the quota; shrinking gives nothing back.
    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        let Some(quota) = self.guard.quota_of(fd.rep()) else {
            return HostDescriptor::set_size(&mut self.fs, fd, size).await;
        };
        let current = HostDescriptor::stat(&mut self.fs, again(&fd)).await?.size;
        let growth = size.saturating_sub(current);
        quota.reserve(growth)?;
        let result = HostDescriptor::set_size(&mut self.fs, fd, size).await;
        if result.is_err() {
            quota.release(growth);
        }
        result
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.fs, fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.fs, fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        let Some(quota) = self.guard.quota_of(fd.rep()) else {
            return HostDescriptor::write(&mut self.fs, fd, buf, offset).await;
        };
        let len = buf.len() as u64;
        quota.reserve(len)?;
        let result = HostDescriptor::write(&mut self.fs, fd, buf, offset).await;
        quota.release(match &result {
            Ok(written) => len.saturating_sub(*written),
            Err(_) => len,
        });
        result
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        HostDescriptor::read_directory(&mut self.fs, fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.fs, fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        HostDescriptor::create_directory_at(&mut self.fs, fd, path).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat(&mut self.fs, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        HostDescriptor::stat_at(&mut self.fs, fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times_at(&mut self.fs, fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        HostDescriptor::link_at(
            &mut self.fs,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        )
        .await
    }

    /// Refuses special files before wasmtime-wasi opens anything, so an open
    /// cannot block on a FIFO; the new descriptor joins its parent's mount.
    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
        oflags: OpenFlags,
        flags: DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        // Resolved exactly as the open will resolve it; a failed stat (no
        // such file yet, a path leaving the mount) is left to the open.
        if let Ok(stat) =
            HostDescriptor::stat_at(&mut self.fs, again(&fd), path_flags, path.clone()).await
            && !matches!(
                stat.type_,
                DescriptorType::RegularFile | DescriptorType::Directory
                    // Only without follow, where the open refuses it itself.
                    | DescriptorType::SymbolicLink
            )
        {
            tracing::debug!(%path, kind = ?stat.type_, "open of a special file refused");
            return Err(refused());
        }
        let mount = self.guard.mount_of(fd.rep());
        let opened =
            HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, oflags, flags).await?;
        if let Some(mount) = mount {
            self.guard.descriptors.insert(opened.rep(), mount);
        }
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.guard.descriptors.remove(&fd.rep());
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        HostDescriptor::readlink_at(&mut self.fs, fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        HostDescriptor::remove_directory_at(&mut self.fs, fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        HostDescriptor::rename_at(&mut self.fs, fd, old_path, new_fd, new_path).await
    }

    /// The link's directory is opened through wasmtime-wasi (never resolved
    /// here), measured, and the link created in that very directory.
    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let Some(mount) = self.guard.mount_of(fd.rep()) else {
            return Err(refused());
        };
        if self.guard.symlinks == SymlinkPolicy::Deny {
            return Err(refused());
        }
        let Some((parent, name)) = dest_path.rsplit_once('/') else {
            return self.checked_symlink(mount, fd, src_path, dest_path).await;
        };
        if matches!(name, "" | "." | "..") {
            return Err(ErrorCode::Invalid.into());
        }
        let dir = HostDescriptor::open_at(
            &mut self.fs,
            fd,
            PathFlags::SYMLINK_FOLLOW,
            parent.to_owned(),
            OpenFlags::DIRECTORY,
            DescriptorFlags::READ,
        )
        .await?;
        let result = self
            .checked_symlink(mount, again(&dir), src_path, name.to_owned())
            .await;
        HostDescriptor::drop(&mut self.fs, dir).map_err(FsError::trap)?;
        result
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        HostDescriptor::unlink_file_at(&mut self.fs, fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<types::InputStream>> {
        HostDescriptor::read_via_stream(&mut self.fs, fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let quota = self.guard.quota_of(fd.rep());
        let stream = HostDescriptor::write_via_stream(&mut self.fs, fd, offset)?;
        match quota {
            Some(quota) => self.quota_stream(stream, quota),
            None => Ok(stream),
        }
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let quota = self.guard.quota_of(fd.rep());
        let stream = HostDescriptor::append_via_stream(&mut self.fs, fd)?;
        match quota {
            Some(quota) => self.quota_stream(stream, quota),
            None => Ok(stream),
        }
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.fs, a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.fs, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash_at(&mut self.fs, fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.fs, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}
