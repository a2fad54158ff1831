"""Benchmarks that print ratios against qemu-img, nbdcopy and virt-v2v (not tests: run by hand).

Run one as a module from the project root, e.g. `.venv/bin/python -m bench.copy_bench`.
"""
