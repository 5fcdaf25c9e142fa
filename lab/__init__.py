"""The lab: the bench, the demo, the studies and the test models. Nothing the pack ships to a host imports it."""
