"""The EC2 host's services (worker pool, PR processor) and what they share with the Lambda (`common`).

Importing this package must stay cheap and free of host-only dependencies: the Lambda bundle ships
`ec2_services/common` alone.
"""
