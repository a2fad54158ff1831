"""--verify-boot: boot the converted guest from what the target describes and watch it come up."""
