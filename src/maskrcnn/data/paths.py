"""Joining an annotation file's image names to the image folder, refusing names that escape it.

An annotation file is data, possibly from someone else: a `file_name` of "/etc/passwd" or "../../x" must
not make the library read (or a later step write next to) files outside the folder the user named.
"""
from __future__ import annotations

import ntpath
import os
import posixpath

from ..errors import DataError


def join_inside(image_dir: str, file_name, *, where: str) -> str:
    """image_dir / file_name, or a DataError (naming `where`) if file_name is absolute or leaves image_dir.

    The check is on the names (no symlinks resolved), so an image folder that is itself a link still works.
    """
    if not isinstance(file_name, str) or not file_name.strip():
        raise DataError(f"{where}: file name {file_name!r} is not a non-empty string")
    if posixpath.isabs(file_name) or ntpath.isabs(file_name) or ntpath.splitdrive(file_name)[0]:
        raise DataError(f"{where}: file name {file_name!r} is an absolute path; refused (names must be relative "
                        f"to the image folder {image_dir})")
    root = os.path.normpath(os.path.abspath(image_dir))
    path = os.path.normpath(os.path.join(root, file_name.replace("\\", "/")))
    if os.path.commonpath([root, path]) != root:
        raise DataError(f"{where}: file name {file_name!r} points outside the image folder {image_dir}; refused")
    return path
