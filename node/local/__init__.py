"""A federation of real nodes on loopback, for the demo, the tests and the benchmarks.

Nothing in the node's core imports this package; only `node.cli`, the tests and the
benchmarks do.
"""
