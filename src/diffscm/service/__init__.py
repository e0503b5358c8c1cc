"""What the command line and the explorer server share: factual images and values, interventions, and the
explorer's cached counterfactual session with its HTTP server."""
