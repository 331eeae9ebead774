"""A faithful Bitbucket Cloud API 2.0 simulator for tests, the demo and benchmarks.

Run it with `python -m bitbucket_sim --port P --workspace W --repos N --seed S`, serve it from
Python with `bitbucket_sim.server.SimServer`, or launch it as a subprocess in tests with
`bitbucket_sim.testing.SimProcess`. See README.md in this package for the full surface.
"""
