"""A small in-memory FUSE file system whose fsync fails with a real EIO from the kernel while
an arming file exists (a dying disk: writes and renames work, the durability barrier does not).

    python tests/support/eio_fs.py MOUNTPOINT ARM_FILE

``ARM_FILE`` lies outside the mount: while it exists, every ``fsync``/``fdatasync`` of a file
and every ``fsync`` of a directory in the mount fails with ``EIO``. The contents live in memory
and vanish at unmount. Run as a process (pyfuse3 runs trio); stop it with SIGTERM.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import pyfuse3
import trio


@dataclass
class Node:
    ino: int
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[bytes, Node] = field(default_factory=dict)
    parent: Node | None = None
    times: list[int] = field(default_factory=lambda: [time.time_ns()] * 3)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class EioFS(pyfuse3.Operations):
    def __init__(self, arm: Path) -> None:
        super().__init__()
        self.arm = arm
        self._inodes = count(pyfuse3.ROOT_INODE + 1)
        self.root = Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755)
        self.nodes = {self.root.ino: self.root}

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _child(self, parent: Node, name: bytes) -> Node:
        try:
            return parent.entries[name]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = node.ino
        entry.entry_timeout = entry.attr_timeout = 0
        entry.st_mode = node.mode
        entry.st_nlink = 2 if node.is_dir else 1
        entry.st_uid, entry.st_gid = os.getuid(), os.getgid()
        entry.st_size = 4096 if node.is_dir else len(node.data)
        entry.st_blksize = 4096
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns = node.times
        return entry

    def _new(self, parent_ino: int, name: bytes, mode: int) -> Node:
        parent = self._node(parent_ino)
        if name in parent.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        node = Node(next(self._inodes), mode, parent=parent)
        self.nodes[node.ino] = node
        parent.entries[name] = node
        return node

    def _barrier(self) -> None:
        if self.arm.exists():
            raise pyfuse3.FUSEError(errno.EIO)

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
            del node.data[attr.st_size :]
            node.data.extend(bytes(attr.st_size - len(node.data)))
        if fields.update_mode:
            node.mode = (node.mode & ~0o7777) | (attr.st_mode & 0o7777)
        if fields.update_mtime:
            node.times[1] = attr.st_mtime_ns
        return self._attrs(node)

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._attrs(self._new(parent_inode, name, stat.S_IFDIR | (mode & 0o7777)))

    async def create(self, parent_inode, name, mode, flags, ctx):
        node = self._new(parent_inode, name, stat.S_IFREG | (mode & 0o7777))
        return pyfuse3.FileInfo(fh=node.ino), self._attrs(node)

    async def unlink(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        self.nodes.pop(self._child(parent, name).ino, None)
        del parent.entries[name]

    async def rmdir(self, parent_inode, name, ctx):
        parent = self._node(parent_inode)
        if self._child(parent, name).entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        await self.unlink(parent_inode, name, ctx)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        node = self._child(old_parent, name_old)
        replaced = new_parent.entries.get(name_new)
        if replaced is not None and replaced is not node:
            self.nodes.pop(replaced.ino, None)
        del old_parent.entries[name_old]
        new_parent.entries[name_new] = node
        node.parent = new_parent

    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if flags & os.O_TRUNC:
            node.data.clear()
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh, off, size):
        return bytes(self._node(fh).data[off : off + size])

    async def write(self, fh, off, buf):
        node = self._node(fh)
        if off > len(node.data):
            node.data.extend(bytes(off - len(node.data)))
        node.data[off : off + len(buf)] = buf
        node.times[1] = time.time_ns()
        return len(buf)

    async def flush(self, fh):
        return None

    async def release(self, fh):
        return None

    async def fsync(self, fh, datasync):
        self._barrier()

    async def opendir(self, inode, ctx):
        if not self._node(inode).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        node = self._node(fh)
        names = sorted(node.entries)
        for index in range(start_id, len(names)):
            child = node.entries[names[index]]
            if not pyfuse3.readdir_reply(token, names[index], self._attrs(child), index + 1):
                break

    async def releasedir(self, fh):
        return None

    async def fsyncdir(self, fh, datasync):
        self._barrier()

    async def statfs(self, ctx):
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 4096
        out.f_blocks = out.f_bfree = out.f_bavail = 1 << 20
        out.f_files = out.f_ffree = out.f_favail = 1 << 20
        out.f_namemax = 255
        return out

    async def access(self, inode, mode, ctx):
        return True


def main() -> int:
    mountpoint, arm = Path(sys.argv[1]), Path(sys.argv[2])
    options = set(pyfuse3.default_options)
    options.discard("default_permissions")
    options.add("fsname=eiofs")
    pyfuse3.init(EioFS(arm), str(mountpoint), options)
    signal.signal(signal.SIGTERM, lambda *_: pyfuse3.terminate())
    signal.signal(signal.SIGINT, lambda *_: pyfuse3.terminate())
    print("mounted", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
