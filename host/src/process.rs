//! Process behaviour shared by the command-line programs.

/// A closed stdout (`tallinn inbox | head`) ends the program quietly with the
/// status a shell reports for SIGPIPE (141), as C tools do, instead of a panic.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
