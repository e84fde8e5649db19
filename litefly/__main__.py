from litefly.cli.main import main

main()
