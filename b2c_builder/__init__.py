"""b2c-builder: build boot2container-style initramfs releases from Debian packages."""

__version__ = "0.1.0"
