"""rootless: run OCI/Docker images of any architecture as an unprivileged user."""

__version__ = "0.1.0"
