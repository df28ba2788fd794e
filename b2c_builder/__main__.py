from b2c_builder.cli import main

main()
