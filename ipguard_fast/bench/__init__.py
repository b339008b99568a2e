"""The side-by-side benchmark shipped with the package (`ipguard bench`): the engine against
the peers people use today, on the same candidates, counted with the same acceptance rule.

measure.py (timers, floor, memory, machine) -> methods.py (engine modes, peers, ratios)
-> runner.py (the command line); models.py holds the benchmark models and their training
recipes, peers/ the peer implementations, report.py the Markdown table and chart.
"""
