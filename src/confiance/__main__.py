from confiance.cli import main

main()
