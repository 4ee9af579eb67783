"""Test support shipped with the package: the op registry and plain-torch reference models."""
