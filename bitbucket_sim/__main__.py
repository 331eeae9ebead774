"""Entry point: `python -m bitbucket_sim --port P --workspace W --repos N --seed S ...`."""

from bitbucket_sim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
