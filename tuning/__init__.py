"""The user simulator, the Ray Tune search of the collator's weights, and the bias audits.

See tuning/README.md. app/ never imports this package; it imports app/ (and Ray, for the search).
"""
