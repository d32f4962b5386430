//! The progress bar of `map` and `imap` (feature `progress`, [`Builder::progress_bar`]):
//! indicatif on standard error, drawn only when it is a terminal (hidden when piped, redirected
//! or `TERM=dumb`, so logs get no escape codes).
//!
//! ```text
//! submit:      a bar of the batch's length (map), or a counter (imap: the length is unknown)
//! completion:  the batch calls its observer with the items done so far -> set_position
//! end:         all done (map), or the iterator dropped (imap) -> finish
//! ```
//!
//! [`Builder::progress_bar`]: crate::Builder::progress_bar

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::job::Batch;

/// A bar for `batch` (of `total` items, or a counter when unknown), updated at each completion.
pub(crate) fn attach(batch: &Batch, total: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    let bar = ProgressBar::with_draw_target(total, target);
    let style = match total {
        Some(_) => ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} tasks ({per_sec}, eta {eta})",
        ),
        None => ProgressStyle::with_template("{elapsed_precise} {pos} tasks ({per_sec})"),
    };
    if let Ok(style) = style {
        bar.set_style(style.progress_chars("=> "));
    }
    let b = bar.clone();
    batch.observe(Box::new(move |done| {
        b.set_position(done);
        if total.is_some_and(|t| done >= t) {
            b.finish();
        }
    }));
    bar
}
