// `sqlx::migrate!` embeds the files of migrations/ at compile time, and cargo cannot tell that a new one
// needs a rebuild: without this, an incremental build keeps serving the old set of migrations.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
