from kmip_fargate.main import main

main()
