"""The CDK app's constructs (one per concern) and the stack that composes them; see app.py for the entry point."""
