"""The build pipeline: Debian archive -> ELF and module closures -> rootfs -> newc cpio ->
compression.
"""
