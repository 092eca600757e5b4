"""The EC2 host's services: the worker pool and the PR processor (what they share with the Lambda: `aipm_common`)."""
