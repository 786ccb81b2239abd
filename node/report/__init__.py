"""The compliance report (`liaison report`): the oversight indicators of
`federation.indicators`, computed from the node's own audit log once it verifies
(`source`), rendered as one self-contained HTML file (`html`, with `charts`), JSON or CSV
(`files`). The same JSON and CSV render what `liaison oversight indicators` fetched."""
