"""What crosses borders: the wire contract, trust (PKI, directory), and the peer client.

Nothing here imports :mod:`node`; a node imports this package, never the other way round.
"""
