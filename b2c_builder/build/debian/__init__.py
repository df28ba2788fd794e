"""Pure-Python Debian archive client: sources -> index -> resolve -> download -> deb.

mirror = sources.default_mirror()
session = download.make_session()
archive = index.open_archive(session, mirror, suite, arch, keyring=..., cache_dir=...)
for pkg in resolve.closure(archive, ["podman", "crun", "conmon", "busybox-static"]):
    path = download.fetch(session, archive.url_for(pkg), pkg.sha256, pkg.size, cache_dir)
    deb.extract_into(staging, path, Origin(pkg.name, pkg.version))
"""
