#!/usr/bin/env python3
"""A FUSE file system that forgets what was never synced: the power-cut model of
``tools/power_cut.py`` (the technique of Jepsen's LazyFS, written for the purpose on pyfuse3).

    python tools/lazyfs.py BACKING MOUNTPOINT [--trace FILE] [--eio-while FILE]

It mounts ``MOUNTPOINT`` and serves it from memory, loaded from ``BACKING`` at mount:

- a file's writes and truncations stay in memory until ``fsync``/``fdatasync`` of that file;
- a directory's changes (create, mkdir, symlink, rename in or out, unlink, rmdir) stay in memory
  until ``fsync`` of that directory (a rename between two directories needs both);
- reads, lookups and listings see the pending state, as a page cache would.

``BACKING`` always holds exactly the synced state: every fsync writes it through (a file's
synced bytes at each path where the synced directory tree reaches it; a directory's synced
entries, materialising the synced state of what they name). A file whose directory entry was
synced but whose data never was is there with the data it had at its last fsync (empty if
never). Unmounting (``fusermount3 -u``) or killing this process is the power cut: nothing
pending is written, and the next mount of ``BACKING`` starts from exactly what was synced. On
exit it prints what the cut dropped. Permissions and times are not part of the model (they
survive as they were); hard links are refused (EPERM).

``--eio-while FILE`` models a dying disk instead: while ``FILE`` (outside the mount) exists,
every ``fsync``/``fdatasync`` of a file and every ``fsync`` of a directory fails with a real
``EIO`` from the kernel and syncs nothing, while writes, renames and reads still work
(``tests/support/eio_fs.py`` mounts it so).
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import stat
import sys
import time
from pathlib import Path

import pyfuse3
import trio

BLOCK = 4096
TIMEOUT = 1.0


class Node:
    """An inode: the visible (pending) state and the synced one."""

    def __init__(self, ino: int, mode: int) -> None:
        self.ino = ino
        self.mode = mode
        now = time.time_ns()
        self.times = [now, now, now]  # atime, mtime, ctime
        # files
        self.data = bytearray()
        self.synced = bytearray()
        self.dirty: set[int] = set()  # blocks written since the last fsync
        self.resized = False
        # directories
        self.entries: dict[bytes, Node] = {}
        self.synced_entries: dict[bytes, Node] = {}
        self.parent: Node | None = None  # visible parent (directories only, for '..')
        # symlinks
        self.target = b""
        # where the synced tree names this node: (directory, name)
        self.placements: set[tuple[Node, bytes]] = set()
        self.links = 0  # visible directory entries

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def pending(self) -> bool:
        if self.is_dir:
            return self.entries != self.synced_entries
        return bool(self.dirty) or self.resized


class LazyFS(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(
        self, backing: Path, trace: Path | None = None, eio_while: Path | None = None
    ) -> None:
        super().__init__()
        self.backing = backing
        self.eio_while = eio_while
        self.nodes: dict[int, Node] = {}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.counts = {"fsync": 0, "fsyncdir": 0}
        self.trace = open(trace, "a", buffering=1) if trace else None  # noqa: SIM115
        self.root = Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755)
        self.root.links = 1
        self.root.parent = self.root
        self.nodes[self.root.ino] = self.root
        self._load(self.root, backing)

    # -- the model ---------------------------------------------------------------------------

    def _new(self, mode: int) -> Node:
        node = Node(self.next_ino, mode)
        self.next_ino += 1
        self.nodes[node.ino] = node
        return node

    def _load(self, directory: Node, path: Path) -> None:
        """The backing tree, as both the visible and the synced state."""
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            st = entry.stat(follow_symlinks=False)
            node = self._new(st.st_mode)
            name = os.fsencode(entry.name)
            if entry.is_symlink():
                node.target = os.fsencode(os.readlink(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                node.parent = directory
                self._load(node, Path(entry.path))
            else:
                with open(entry.path, "rb") as f:
                    node.data = bytearray(f.read())
                node.synced = bytearray(node.data)
            directory.entries[name] = directory.synced_entries[name] = node
            node.placements.add((directory, name))
            node.links = 1

    def _synced_paths(self, node: Node, depth: int = 0) -> list[Path]:
        """Where the synced tree, from the root, names this node in the backing dir."""
        if node is self.root:
            return [self.backing]
        if depth > 256:
            return []
        return [
            path / os.fsdecode(name)
            for directory, name in node.placements
            for path in self._synced_paths(directory, depth + 1)
        ]

    def _materialise(self, node: Node, path: Path) -> None:
        """Write a node's synced state at ``path`` in the backing dir."""
        _remove(path)
        if stat.S_ISLNK(node.mode):
            os.symlink(node.target, path)
        elif node.is_dir:
            path.mkdir(mode=stat.S_IMODE(node.mode) or 0o755)
            for name, child in node.synced_entries.items():
                self._materialise(child, path / os.fsdecode(name))
        else:
            with open(path, "wb") as f:
                f.write(node.synced)
            os.chmod(path, stat.S_IMODE(node.mode))

    def sync_file(self, node: Node) -> None:
        self.counts["fsync"] += 1
        size = len(node.data)
        blocks = sorted(node.dirty)
        if node.resized or len(node.synced) != size:
            node.synced = bytearray(node.data)
            blocks = list(range((size + BLOCK - 1) // BLOCK))
        else:
            for block in blocks:
                node.synced[block * BLOCK : (block + 1) * BLOCK] = node.data[
                    block * BLOCK : (block + 1) * BLOCK
                ]
        for path in self._synced_paths(node):
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                self._materialise(node, path)
                continue
            try:
                for block in blocks:
                    os.pwrite(fd, node.synced[block * BLOCK : (block + 1) * BLOCK], block * BLOCK)
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        node.dirty.clear()
        node.resized = False

    def sync_dir(self, node: Node) -> None:
        self.counts["fsyncdir"] += 1
        old, new = node.synced_entries, dict(node.entries)
        node.synced_entries = new
        paths = self._synced_paths(node)
        for name, child in old.items():
            if new.get(name) is not child:
                child.placements.discard((node, name))
                for path in paths:
                    _remove(path / os.fsdecode(name))
        for name, child in new.items():
            if old.get(name) is not child:
                child.placements.add((node, name))
                for path in paths:
                    self._materialise(child, path / os.fsdecode(name))

    def dropped(self) -> str:
        files = sum(1 for n in self.nodes.values() if not n.is_dir and n.pending())
        dirs = sum(1 for n in self.nodes.values() if n.is_dir and n.pending())
        return (
            f"lazyfs: cut: dropped unsynced writes of {files} files and unsynced entries of"
            f" {dirs} directories ({self.counts['fsync']} file and {self.counts['fsyncdir']}"
            " directory fsyncs served)"
        )

    def _log(self, *what: object) -> None:
        if self.trace:
            self.trace.write(" ".join(str(w) for w in what) + "\n")

    def _sync(self, what: str, node: Node) -> None:
        """An fsync of a file or a directory: written through, or EIO while the disk dies
        (nothing synced, the pending state stays pending)."""
        failing = self.eio_while is not None and self.eio_while.exists()
        state = "pending" if node.pending() else "clean"
        self._log(what, node.ino, state, *(["EIO"] if failing else []))
        if failing:
            raise pyfuse3.FUSEError(errno.EIO)
        if node.is_dir:
            self.sync_dir(node)
        else:
            self.sync_file(node)

    # -- helpers -----------------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _child(self, parent: Node, name: bytes) -> Node:
        if not parent.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        try:
            return parent.entries[name]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.ino
        entry.generation = 0
        entry.entry_timeout = TIMEOUT
        entry.attr_timeout = TIMEOUT
        entry.st_mode = node.mode
        entry.st_nlink = max(node.links, 1) if node.is_dir else node.links
        entry.st_uid = os.getuid()
        entry.st_gid = os.getgid()
        entry.st_rdev = 0
        if node.is_dir:
            size = 4096
        elif stat.S_ISLNK(node.mode):
            size = len(node.target)
        else:
            size = len(node.data)
        entry.st_size = size
        entry.st_blksize = BLOCK
        entry.st_blocks = (size + 511) // 512
        entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns = node.times
        return entry

    def _touch(self, node: Node) -> None:
        now = time.time_ns()
        node.times[1] = node.times[2] = now

    def _add(self, parent: Node, name: bytes, node: Node) -> None:
        if name in parent.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        parent.entries[name] = node
        node.links += 1
        if node.is_dir:
            node.parent = parent
        self._touch(parent)
        self._log("add", parent.ino, name, node.ino)

    def _create(self, parent_ino: int, name: bytes, mode: int) -> Node:
        parent = self._node(parent_ino)
        if not parent.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name in parent.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        node = self._new(mode)
        self._add(parent, name, node)
        return node

    # -- operations --------------------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        parent = self._node(parent_inode)
        if name == b".":
            return self._attrs(parent)
        if name == b"..":
            return self._attrs(parent.parent or self.root)
        return self._attrs(self._child(parent, name))

    async def forget(self, inode_list):
        return None

    async def getattr(self, inode, ctx=None):
        return self._attrs(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        if fields.update_size:
            self._truncate(node, attr.st_size)
        if fields.update_mode:
            node.mode = (node.mode & ~0o7777) | (attr.st_mode & 0o7777)
        if fields.update_atime:
            node.times[0] = attr.st_atime_ns
        if fields.update_mtime:
            node.times[1] = attr.st_mtime_ns
        node.times[2] = time.time_ns()
        return self._attrs(node)

    def _truncate(self, node: Node, size: int) -> None:
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if size != len(node.data):
            if size < len(node.data):
                del node.data[size:]
            else:
                node.data.extend(bytes(size - len(node.data)))
            node.resized = True
            self._touch(node)
            self._log("truncate", node.ino, size)

    async def readlink(self, inode, ctx):
        return self._node(inode).target

    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        if not stat.S_ISREG(mode):
            raise pyfuse3.FUSEError(errno.EPERM)
        return self._attrs(self._create(parent_inode, name, mode))

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._attrs(self._create(parent_inode, name, stat.S_IFDIR | (mode & 0o7777)))

    async def symlink(self, parent_inode, name, target, ctx):
        node = self._create(parent_inode, name, stat.S_IFLNK | 0o777)
        node.target = target
        return self._attrs(node)

    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)

    def _unlink(self, parent: Node, name: bytes) -> None:
        node = parent.entries.pop(name)
        node.links -= 1
        self._touch(parent)
        self._log("remove", parent.ino, name, node.ino)

    async def unlink(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        if self._child(parent, name).is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self._unlink(parent, name)

    async def rmdir(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        node = self._child(parent, name)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if node.entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._unlink(parent, name)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        node = self._child(old_parent, name_old)
        target = new_parent.entries.get(name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            if target is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            old_parent.entries[name_old], new_parent.entries[name_new] = target, node
            for moved, parent in ((node, new_parent), (target, old_parent)):
                if moved.is_dir:
                    moved.parent = parent
            self._touch(old_parent)
            self._touch(new_parent)
            return
        if target is node:
            return
        if target is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if target.is_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if target.is_dir and target.entries:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self._unlink(new_parent, name_new)
        self._unlink(old_parent, name_old)
        self._add(new_parent, name_new, node)

    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if flags & os.O_TRUNC:
            self._truncate(node, 0)
        return pyfuse3.FileInfo(fh=inode)

    async def create(self, parent_inode, name, mode, flags, ctx):
        node = self._create(parent_inode, name, stat.S_IFREG | (mode & 0o7777))
        return pyfuse3.FileInfo(fh=node.ino), self._attrs(node)

    async def read(self, fh, off, size):
        return bytes(self._node(fh).data[off : off + size])

    async def write(self, fh, off, buf):
        node = self._node(fh)
        end = off + len(buf)
        if off > len(node.data):
            node.data.extend(bytes(off - len(node.data)))
        if end > len(node.data):
            node.resized = node.resized or len(node.synced) != end
        node.data[off:end] = buf
        node.dirty.update(range(off // BLOCK, (end - 1) // BLOCK + 1))
        node.times[1] = time.time_ns()
        return len(buf)

    async def flush(self, fh):
        return None

    async def release(self, fh):
        return None

    async def fsync(self, fh, datasync):
        self._sync("fsync", self._node(fh))

    async def opendir(self, inode, ctx):
        if not self._node(inode).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        node = self._node(fh)
        names = sorted(node.entries)
        for index in range(start_id, len(names)):
            child = node.entries.get(names[index])
            if child is None:
                continue
            if not pyfuse3.readdir_reply(token, names[index], self._attrs(child), index + 1):
                break

    async def releasedir(self, fh):
        return None

    async def fsyncdir(self, fh, datasync):
        self._sync("fsyncdir", self._node(fh))

    async def statfs(self, ctx):
        st = os.statvfs(self.backing)
        out = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files"):
            setattr(out, field, getattr(st, field))
        out.f_ffree = out.f_favail = st.f_ffree
        out.f_namemax = 255
        return out

    async def access(self, inode, mode, ctx):
        return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def serve(fs: LazyFS, mountpoint: Path, fsname: str, mounted: str) -> int:
    """Mount ``fs`` and serve it until unmounted or SIGTERM/SIGINT (everything pending is then
    dropped, as in a cut); ``mounted`` is printed once the mount is up."""
    options = set(pyfuse3.default_options)
    options.discard("default_permissions")
    options.add(f"fsname={fsname}")
    pyfuse3.init(fs, str(mountpoint), options)
    signal.signal(signal.SIGTERM, lambda *_: pyfuse3.terminate())
    signal.signal(signal.SIGINT, lambda *_: pyfuse3.terminate())
    print(mounted, flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
        print(fs.dropped(), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("backing", type=Path, help="directory that holds the synced state")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--trace", type=Path, help="log every directory change and fsync here")
    parser.add_argument(
        "--eio-while", type=Path, help="every fsync fails with EIO while this file exists"
    )
    args = parser.parse_args()
    fs = LazyFS(args.backing.resolve(), args.trace, args.eio_while)
    mounted = f"lazyfs: {args.mountpoint} mounted over {args.backing}"
    return serve(fs, args.mountpoint, "lazyfs", mounted)


if __name__ == "__main__":
    sys.exit(main())
