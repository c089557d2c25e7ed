//! Rebuild `store` when a migration is added or edited: `embed_migrations!` reads `migrations/` at compile time but
//! does not tell cargo to watch it, so a new migration directory alone would leave the old set in every binary.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
