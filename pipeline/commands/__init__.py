"""Sub-commands of the `matpipe` CLI, one module each; each exposes `register(subparsers)`."""
