use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::{Tool, ToolError, ToolSpec};

/// An ordered set of tools with unique names. Cloning is cheap (the tools are shared).
///
/// ```
/// use agenthelm::prelude::*;
///
/// /// Add two numbers.
/// #[tool]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// let set = tools![add];
/// assert!(set.contains("add"));
/// assert_eq!(set.names().collect::<Vec<_>>(), ["add"]);
/// ```
#[derive(Clone, Default)]
pub struct ToolSet {
    tools: Vec<Arc<dyn Tool>>,
    index: HashMap<String, usize>,
}

impl ToolSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool, replacing one of the same name, and returns the set (builder style).
    pub fn with(mut self, tool: impl IntoTool) -> Self {
        self.insert(tool);
        self
    }

    /// Adds a tool; returns the tool it replaced, if one had the same name.
    pub fn insert(&mut self, tool: impl IntoTool) -> Option<Arc<dyn Tool>> {
        let tool = tool.into_tool();
        let name = tool.spec().name.clone();
        match self.index.get(&name) {
            Some(&i) => Some(std::mem::replace(&mut self.tools[i], tool)),
            None => {
                self.index.insert(name, self.tools.len());
                self.tools.push(tool);
                None
            }
        }
    }

    /// Adds every tool of `other` (replacing same-named ones).
    pub fn extend(&mut self, other: &ToolSet) {
        for tool in &other.tools {
            self.insert(Arc::clone(tool));
        }
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.index.get(name).map(|&i| &self.tools[i])
    }

    /// The tool called `name`, or [`ToolError::NotFound`] listing the names that exist.
    pub fn require(&self, name: &str) -> Result<&Arc<dyn Tool>, ToolError> {
        self.get(name).ok_or_else(|| ToolError::NotFound {
            tool: name.to_owned(),
            available: self.names().map(str::to_owned).collect(),
        })
    }

    /// Whether a tool called `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Tool names, in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.iter().map(|t| t.spec().name.as_str())
    }

    /// Tool specs, in insertion order.
    pub fn specs(&self) -> impl Iterator<Item = &ToolSpec> {
        self.tools.iter().map(|t| t.spec())
    }

    /// The tools, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.iter()
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

impl fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl<T: IntoTool> FromIterator<T> for ToolSet {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = ToolSet::new();
        for tool in iter {
            set.insert(tool);
        }
        set
    }
}

/// Anything a [`ToolSet`] accepts: a tool, or a shared one.
pub trait IntoTool {
    /// The tool, shared.
    fn into_tool(self) -> Arc<dyn Tool>;
}

impl<T: Tool + 'static> IntoTool for T {
    fn into_tool(self) -> Arc<dyn Tool> {
        Arc::new(self)
    }
}

impl IntoTool for Arc<dyn Tool> {
    fn into_tool(self) -> Arc<dyn Tool> {
        self
    }
}

/// Makes a tool from a type name; what [`tools!`](crate::tools) calls for each entry.
///
/// Implemented for every `Tool + Default` type, which covers the hidden type `#[tool]` generates
/// for a function.
pub trait ToolFactory {
    /// A new instance of the tool.
    fn tool() -> Arc<dyn Tool>;
}

impl<T: Tool + Default + 'static> ToolFactory for T {
    fn tool() -> Arc<dyn Tool> {
        Arc::new(T::default())
    }
}

/// Builds a [`ToolSet`] from `#[tool]` functions (or any `Tool + Default` types).
///
/// ```
/// use agenthelm::prelude::*;
///
/// /// Greet someone.
/// #[tool]
/// fn greet(name: String) -> String { format!("hello {name}") }
///
/// /// Say goodbye.
/// #[tool]
/// async fn bye(name: String) -> String { format!("bye {name}") }
///
/// assert_eq!(tools![greet, bye].len(), 2);
/// ```
#[macro_export]
macro_rules! tools {
    () => { $crate::tool::ToolSet::new() };
    ($($tool:ty),+ $(,)?) => {
        $crate::tool::ToolSet::new()
            $(.with(<$tool as $crate::tool::ToolFactory>::tool()))+
    };
}
