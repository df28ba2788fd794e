"""The boot side on the host: QEMU command lines and runs, the job initrd, netboot/ISO entries,
the console parser and reports.
"""
