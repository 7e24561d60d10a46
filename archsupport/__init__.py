"""Platforms, ELF, qemu-user discovery and binfmt_misc for rootless."""
